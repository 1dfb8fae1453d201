"""Clients for the Sensorium server (webcam, microphone, and a shared library)."""
