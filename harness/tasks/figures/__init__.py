"""The figures of gali-collect, drawn from scores documents: each module has the drawing functions (a matplotlib
Figure from plain data) and `plan` functions that tasks declare in `Task.figures` (which files a set of documents
makes). harness.stages.plots decides what needs drawing and saves the PNG files."""
