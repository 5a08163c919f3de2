//! Built-in devices on the rawgadget API: Gadget Zero, HID keyboard
