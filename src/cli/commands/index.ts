// Every CLI command lives in its own file and registers itself on the program.
import type { Command } from 'commander';
import { register as bench } from './bench.js';
import { register as evaluate } from './eval.js';
import { register as search } from './search.js';
import { register as synth } from './synth.js';
import { register as trace } from './trace.js';
import { register as train } from './train.js';
import { register as clip } from './clip.js';
import { register as galleryIndex } from './gallery_index.js';
import { register as serve } from './serve.js';
import { register as features } from './features.js';
import { register as pretrain } from './pretrain.js';

export const commands: ((program: Command) => void)[] = [train, pretrain, evaluate, search, synth, trace, bench, clip, features, galleryIndex, serve];
