"""Device meshes and shardings: how a run is laid out across devices."""
