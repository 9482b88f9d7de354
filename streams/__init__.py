"""Stream processing: consume → parse → window → score → emit; broker lifecycle and replay."""
