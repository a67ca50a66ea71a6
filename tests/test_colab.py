"""The quickstart notebook runs top to bottom (nbclient) on a short setting."""

import os

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_trains_and_plots(tfds_data_dir, tmp_path,
                                              monkeypatch):
  # The kernel inherits this environment: one CPU device, a short run.
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", tfds_data_dir)
  monkeypatch.setenv("QUICKSTART_STEPS", "60")
  monkeypatch.setenv("QUICKSTART_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  path = os.path.join(ROOT, "colabs", "quickstart.ipynb")
  notebook = nbformat.read(path, as_version=4)
  nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": os.path.dirname(path)}}
                          ).execute()
  outputs = "".join(o.get("text", "") for cell in notebook.cells
                    for o in cell.get("outputs", []))
  assert "final test accuracy" in outputs
  assert (tmp_path / "run" / "curves.png").stat().st_size > 10_000
  assert (tmp_path / "run" / "summary.json").exists()
