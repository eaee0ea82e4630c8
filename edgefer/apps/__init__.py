"""Applications built from the runtime stages: offline scoring, the live loop and the kiosk."""
