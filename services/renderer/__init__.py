"""The renderer service: a supervised Chromium pool that turns expanded
templates into images, stores them content-addressed, and publishes events."""
