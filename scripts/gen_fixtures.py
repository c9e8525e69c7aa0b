"""Regenerates every PyTorch fixture. Needs Debian's python3-torch: run with /usr/bin/python3
(npm run fixtures). Each scripts/fixtures/gen_*.py writes its own file under test/fixtures/."""
import glob
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
for script in sorted(glob.glob(os.path.join(here, "fixtures", "gen_*.py"))):
    print(f"== {os.path.basename(script)}", flush=True)
    subprocess.run([sys.executable, script], check=True)
