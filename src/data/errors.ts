// Errors of the data layer. Every message names the file, folder, id or option at fault.
import { DwcError } from '../native.js';

/**
 * Codes: DWC_DATA_MISSING (file or folder absent), DWC_DATA_CORRUPT (an image sharp cannot decode),
 * DWC_DATA_FORMAT (a description file that does not parse or lacks a field), DWC_DATA_MISSING_ID
 * (an id referenced but not defined, e.g. in a feature file), DWC_BAD_ARGUMENT (an option).
 */
export type DataErrorCode = 'DWC_DATA_MISSING' | 'DWC_DATA_CORRUPT' | 'DWC_DATA_FORMAT' | 'DWC_DATA_MISSING_ID' | 'DWC_BAD_ARGUMENT';

export class DataError extends DwcError {
  constructor(
    message: string,
    code: DataErrorCode,
    /** The file, folder or id the error is about. */
    public readonly subject?: string,
  ) {
    super(message, code);
    this.name = 'DataError';
  }
}

/** Throws DWC_BAD_ARGUMENT naming the option unless `ok`. */
export function checkArg(ok: boolean, name: string, msg: string): void {
  if (!ok) throw new DataError(`'${name}' ${msg}`, 'DWC_BAD_ARGUMENT', name);
}

export function checkInt(v: number, name: string, min: number, max = Number.MAX_SAFE_INTEGER): void {
  checkArg(Number.isInteger(v) && v >= min && v <= max, name, `must be an integer in [${min}, ${max}], got ${v}`);
}

export function checkNumber(v: number, name: string, min: number, max: number): void {
  checkArg(Number.isFinite(v) && v >= min && v <= max, name, `must be a finite number in [${min}, ${max}], got ${v}`);
}
