// Progress output shared by the commands: a bar on stderr (items/s, loss) for people, or with
// --json one JSON object per line and event on stdout (nothing else on stdout).
export interface ProgressOptions {
  json?: boolean;
  /** Stream for the bar and messages (default process.stderr). */
  stream?: NodeJS.WriteStream;
  quiet?: boolean;
}

export class Progress {
  readonly json: boolean;
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private barOpen = false;

  constructor(o: ProgressOptions = {}) {
    this.json = !!o.json;
    this.stream = o.stream ?? process.stderr;
    this.tty = !!this.stream.isTTY && !o.quiet;
  }

  /** One event: a JSON line on stdout in --json mode (ignored otherwise). */
  event(o: Record<string, unknown>): void {
    if (this.json) process.stdout.write(JSON.stringify(o) + '\n');
  }

  /** A human message on stderr (suppressed in --json mode). */
  info(msg: string): void {
    if (this.json) return;
    this.clearBar();
    this.stream.write(msg + '\n');
  }

  /** A line on stdout for people (tables, results), suppressed in --json mode. */
  print(msg: string): void {
    if (!this.json) process.stdout.write(msg + '\n');
  }

  /** Updates the bar: `label [#####.....] done/total  extra`. Only drawn on a terminal. */
  bar(label: string, done: number, total: number, extra = ''): void {
    if (this.json || !this.tty) return;
    const width = 28;
    const f = total > 0 ? Math.min(1, done / total) : 0;
    const n = Math.round(f * width);
    const line = `${label} [${'='.repeat(Math.max(0, n - 1))}${n ? (f < 1 ? '>' : '=') : ''}${' '.repeat(width - n)}] ${done}/${total} ${extra}`;
    const cols = this.stream.columns || 100;
    this.stream.write('\r' + line.slice(0, cols - 1).padEnd(Math.min(cols - 1, line.length)) + '\x1b[K');
    this.barOpen = true;
  }

  /** Ends the bar; prints the final line (also when not a terminal, so logs show one line per epoch). */
  endBar(finalLine?: string): void {
    if (this.json) return;
    if (this.barOpen) this.stream.write('\r\x1b[K');
    this.barOpen = false;
    if (finalLine) this.stream.write(finalLine + '\n');
  }

  private clearBar(): void {
    if (this.barOpen) {
      this.stream.write('\r\x1b[K');
      this.barOpen = false;
    }
  }
}

export function fmtRecall(r: Record<string, number>): string {
  return Object.entries(r)
    .map(([k, v]) => `R@${k} ${v.toFixed(2)}`)
    .join('  ');
}
