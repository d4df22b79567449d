"""Strip outputs and run metadata from notebooks, keeping the outputs of cells nbval compares (``# NBVAL_CHECK_OUTPUT``).

Usage: python tools/strip_notebooks.py NOTEBOOK...
"""

import sys

import nbformat


def strip(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k == "tags"}
        if cell.cell_type != "code":
            continue
        if "NBVAL_CHECK_OUTPUT" in cell.source:
            cell.outputs = [o for o in cell.outputs if o.get("output_type") != "display_data"]
        else:
            cell.outputs, cell.execution_count = [], None
    nb.metadata = {"kernelspec": nb.metadata.get("kernelspec", {}), "language_info": {"name": "python"}}
    nbformat.write(nb, path)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        strip(arg)
