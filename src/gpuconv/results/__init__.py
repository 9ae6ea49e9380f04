"""From a backend's components to results: YOLO boxes, YOLO-seg polygons, 3D instances."""
