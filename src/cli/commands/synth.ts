import type { Command } from 'commander';

// Placeholder until the synth command lands.
export function register(program: Command): void {
  void program;
}
