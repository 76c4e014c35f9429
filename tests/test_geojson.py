"""QuPath GeoJSON (equipath.wsi.geojson): regions with holes and classes round-trip; read wherever ASAP XML is."""

import json

import numpy as np

from equipath.wsi.annotations import Annotation, rasterize, rasterize_labels, read_annotations, write_asap_xml
from equipath.wsi.froc import load_ground_truth
from equipath.wsi.geojson import label_features, point_features, read_geojson, read_points, write_geojson


def _known_mask() -> np.ndarray:
    labels = np.zeros((40, 50), np.uint8)
    labels[5:30, 4:35] = 1          # a tumour region ...
    labels[12:20, 10:22] = 0        # ... with a hole
    labels[14:17, 14:17] = 2        # an island of stroma in the hole
    labels[33:40, 40:50] = 2        # stroma touching the image corner
    return labels


def test_label_mask_round_trips_through_qupath_geojson(tmp_path):
    labels = _known_mask()
    names = {1: "Tumor", 2: "Stroma"}
    path = write_geojson(tmp_path / "regions.geojson",
                         label_features(labels, names, downsample=2.0, bounds=(100, 80)))
    data = json.loads(path.read_text())
    # QuPath's format: a FeatureCollection of Polygon features, closed rings, classification names
    assert data["type"] == "FeatureCollection"
    tumour = [f for f in data["features"] if f["properties"]["classification"]["name"] == "Tumor"]
    assert len(tumour) == 1 and len(tumour[0]["geometry"]["coordinates"]) == 2  # exterior + one hole
    for feature in data["features"]:
        assert feature["geometry"]["type"] == "Polygon" and feature["properties"]["objectType"] == "annotation"
        for ring in feature["geometry"]["coordinates"]:
            assert ring[0] == ring[-1] and all(0 <= x <= 100 and 0 <= y <= 80 for x, y in ring)
    annotations = read_annotations(path)
    assert sorted(a.group for a in annotations) == ["Stroma", "Stroma", "Tumor"]
    back = rasterize_labels(annotations, {"Tumor": 1, "Stroma": 2}, labels.shape, downsample=2.0)
    assert np.array_equal(back, labels)


def test_geojson_is_read_where_asap_xml_is(tmp_path):
    # the same tumour outline as ASAP XML and as QuPath GeoJSON gives the same FROC ground truth
    square = np.array([[64, 64], [640, 64], [640, 640], [64, 640]], float)
    write_asap_xml(tmp_path / "a.xml", [Annotation("t", "Tumor", square)])
    write_geojson(tmp_path / "a.geojson", [{"type": "Feature", "geometry": {
        "type": "Polygon", "coordinates": [np.vstack([square, square[:1]]).tolist()]},
        "properties": {"classification": {"name": "Tumor"}}}])
    xml = load_ground_truth(tmp_path / "a.xml", (2048, 2048), mpp=0.25, level=3)
    geo = load_ground_truth(tmp_path / "a.geojson", (2048, 2048), mpp=0.25, level=3)
    assert np.array_equal(xml.labels, geo.labels) and xml.labels.max() == 1
    # a hole is cut out of the tumour mask
    hole = np.array([[200, 200], [400, 200], [400, 400], [200, 400], [200, 200]], float)
    with_hole = Annotation("t", "Tumor", square, (hole,))
    mask = rasterize([with_hole], (8, 8), 100.0)
    assert mask[1, 1] and not mask[3, 3] and mask[5, 5]


def test_points_round_trip(tmp_path):
    xy = np.array([[10.5, 20.0], [30.0, 40.25]])
    path = write_geojson(tmp_path / "cells.geojson",
                         point_features(xy, np.array([1, 2]), np.array([0.9, 0.6]), {1: "Other", 2: "Tumor"}))
    points, names, scores = read_points(path)
    assert np.allclose(points, xy) and names == ["Other", "Tumor"] and np.allclose(scores, [0.9, 0.6])
    assert read_geojson(path) == []  # points are not regions
