//! Real-kernel bench: Linux in QEMU with dummy_hcd, vhci-hcd, usbtest and the reference raw_gadget.ko
