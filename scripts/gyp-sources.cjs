// Prints the CPU source list of native/sources.json for binding.gyp (one list, two builds).
const s = require('../native/sources.json');
console.log([...s.core, ...s.kernels, ...s.model, ...s.addon].join(' '));
