// Every CLI command lives in its own file and registers itself on the program.
import type { Command } from 'commander';
import { register as synth } from './synth.js';
import { register as trace } from './trace.js';

export const commands: ((program: Command) => void)[] = [synth, trace];
