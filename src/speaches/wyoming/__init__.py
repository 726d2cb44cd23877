"""The Wyoming protocol (Home Assistant's voice pipeline) on `WYOMING_URI`: speech to text and text to speech."""
