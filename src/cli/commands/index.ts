// Every CLI command lives in its own file and registers itself on the program.
import type { Command } from 'commander';
import { register as bench } from './bench.js';
import { addClipTrace } from './clip_trace.js';
import { register as evaluate } from './eval.js';
import { register as search } from './search.js';
import { register as synth } from './synth.js';
import { register as trace } from './trace.js';
import { register as train } from './train.js';

// Temporary `clip` group of branch h-clip (the lead wires addClipTrace into commands/clip.ts).
const clip = (program: Command) => addClipTrace(program.command('clip').description('native CLIP tools'));

export const commands: ((program: Command) => void)[] = [train, evaluate, search, synth, trace, bench, clip];
