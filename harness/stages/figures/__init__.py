"""Figure drawing for gali-collect (see harness.stages.plots for the files they are saved to)."""
