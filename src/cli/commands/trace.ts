import type { Command } from 'commander';

// Placeholder until the trace command lands.
export function register(program: Command): void {
  void program;
}
