"""Figure drawing for gali-collect (see harness.plots for the files they are saved to)."""
