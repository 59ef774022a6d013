"""Reads a GeoJSON file with shapely (the reference reader the tests compare with) and prints, as
JSON, each feature's validity, area and class: crates/slide/tests/qupath.rs checks our writer by it.

    PYTHONPATH=.pytools python3 tools/check_geojson.py tissue.geojson
"""
import json
import sys

import shapely.geometry


def main(path):
    with open(path) as f:
        collection = json.load(f)
    out = []
    for feature in collection["features"]:
        shape = shapely.geometry.shape(feature["geometry"])
        props = feature.get("properties") or {}
        out.append({
            "valid": bool(shape.is_valid),
            "area": shape.area,
            "class": (props.get("classification") or {}).get("name"),
            "object": props.get("objectType"),
        })
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
