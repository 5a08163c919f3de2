//! Safe USB Raw Gadget API: be a USB device from userspace
