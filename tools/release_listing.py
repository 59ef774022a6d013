"""List a dataset as the PatchTCGA release's loaders do, and check a patchtcga build against it.

Written from the rule documented in docs/datasets.md ("How a patch is made", *Names*), not from the release's
code: each folder's names sorted by code point; a file kept only when the text from its first
'.' is one of .jpg .JPG .JPEG .png; PTCGA200 walks the root's folders (sorted) but
thumbnail_position_map; PCam200 and segPANDA200 walk <split>/<label or grade>/<case>/;
segPANDA200 skips every name containing 'mask' and opens an image's mask at the text before its
first '.' plus '_mask.png'.

    python3 tools/release_listing.py ROOT {ptcga200,pcam200,segpanda200} [--pickle P]

Checks, exiting 1 with the reasons: every image of ROOT/manifest.csv is listed, nothing else is;
every pickle entry's idx points at its imgs name; every segPANDA200 mask is found. Prints a JSON
summary on success.
"""
import argparse
import csv
import json
import os
import pickle
import sys

EXTENSIONS = {".jpg", ".JPG", ".JPEG", ".png"}
SPLITS = ("train", "val", "test")


def kept(name, kind):
    dot = name.find(".")
    if dot < 0 or name[dot:] not in EXTENSIONS:
        return False
    return not (kind == "segpanda200" and "mask" in name)


def folder_files(folder, kind):
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if kept(n, kind)]


def listing(root, kind):
    """Image paths relative to root, in the loaders' order."""
    paths = []
    if kind == "ptcga200":
        for organ in sorted(os.listdir(root)):
            if organ == "thumbnail_position_map" or not os.path.isdir(os.path.join(root, organ)):
                continue
            paths += folder_files(os.path.join(root, organ), kind)
    else:
        for split in SPLITS:
            sd = os.path.join(root, split)
            if not os.path.isdir(sd):
                continue
            for label in os.listdir(sd):
                ld = os.path.join(sd, label)
                if not os.path.isdir(ld):
                    continue
                for case in sorted(os.listdir(ld)):
                    if os.path.isdir(os.path.join(ld, case)):
                        paths += folder_files(os.path.join(ld, case), kind)
    return [os.path.relpath(p, root) for p in paths]


def mask_of(path):
    folder, name = os.path.split(path)
    return os.path.join(folder, name.split(".", 1)[0] + "_mask.png")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("kind", choices=["ptcga200", "pcam200", "segpanda200"])
    ap.add_argument("--pickle")
    a = ap.parse_args()
    listed = listing(a.root, a.kind)
    errors = []
    with open(os.path.join(a.root, "manifest.csv"), newline="") as f:
        built = [row["file"] for row in csv.DictReader(f)]
    unlisted = sorted(set(built) - set(listed))
    extra = sorted(set(listed) - set(built))
    errors += [f"built but not listed: {p}" for p in unlisted]
    errors += [f"listed but not in the manifest: {p}" for p in extra]
    if a.kind == "segpanda200":
        errors += [f"no mask for {p} at {mask_of(p)}" for p in listed if not os.path.isfile(os.path.join(a.root, mask_of(p)))]
    entries = 0
    if a.pickle:
        with open(a.pickle, "rb") as f:
            splits = pickle.load(f)
        names = [os.path.basename(p) for p in listed]
        for trial, sets in splits.items():
            for set_name, s in sets.items():
                for i, img in zip(s["idx"], s["imgs"]):
                    entries += 1
                    if i >= len(names) or names[i] != img:
                        got = names[i] if i < len(names) else "nothing"
                        errors.append(f"trial {trial} {set_name}: idx {i} is {got}, imgs says {img}")
    if errors:
        print("\n".join(errors[:20]), file=sys.stderr)
        print(f"{len(errors)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"listed": len(listed), "pickle_entries": entries}))


if __name__ == "__main__":
    main()
