"""Tasks: one file each, holding its DataModule and LightningModule."""
