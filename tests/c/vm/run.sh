#!/usr/bin/env bash
# A manual real-kernel check of `rawgadget serve` against raw_gadget.ko, reusing the bench's
# cache (.bench-cache: Debian 6.12 kernel, its initramfs with raw_gadget.ko, bench-guest).
# Run `cargo run --release -p rawgadget-bench -- prepare` once first.
#
#   tests/c/vm/run.sh errno                 # differential errno script, 64- and 32-bit callers
#   tests/c/vm/run.sh zero "cusevm.cases=1,2,10 cusevm.runs=3"
#   tests/c/vm/run.sh compare               # usbtest: module | serve fast | serve retry | in-process
#   tests/c/vm/run.sh latency "cusevm.iter=2000"
#   tests/c/vm/run.sh c10                   # client SIGKILLed mid-transfer
#   tests/c/vm/run.sh c13                   # daemon SIGKILLed, restart
#
# Builds: the static `rawgadget` (target/cusevm), the C clients (gcc -static; the m32 errno
# script when gcc-multilib is there), an initramfs = the bench's + cuse.ko + those binaries +
# tests/c/vm/init. Boots QEMU with TCG (KVM when ACCEL=kvm works).
set -euo pipefail
cd "$(dirname "$0")/../../.."
test_name="${1:?usage: run.sh TEST [extra kernel command line]}"
extra="${2:-}"
cache=.bench-cache
kver=$(ls "$cache/kernel" | sort -V | tail -n1)
rel="$(ls "$cache/initramfs" | grep -v '\.cpio$' | sort -V | tail -n1)"
image="$cache/kernel/$kver/image"
base="$cache/initramfs/$rel.cpio"
[ -f "$base" ] || { echo "no bench initramfs: run the bench's prepare first" >&2; exit 1; }
work=target/cusevm
mkdir -p "$work"

scripts/linux-6.12-header >/dev/null
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$work/target" \
  cargo build --release --target x86_64-unknown-linux-gnu -p rawgadget-cli
make -C tests/c OUT="$PWD/$work/cbin" UAPI="$PWD/$cache/uapi-6.12/include/uapi" all >/dev/null
make -C tests/c OUT="$PWD/$work/cbin" UAPI="$PWD/$cache/uapi-6.12/include/uapi" m32 >/dev/null 2>&1 \
  || echo "(no gcc-multilib: skipping the 32-bit errno script)"

root="$work/root"
rm -rf "$root"; mkdir -p "$root"
(cd "$root" && cpio -idm --quiet < "$OLDPWD/$base")
mkdir -p "$root/lib/modules/$rel/kernel/fs/fuse"
xz -dc "$image/lib/modules/$rel/kernel/fs/fuse/cuse.ko.xz" > "$root/lib/modules/$rel/kernel/fs/fuse/cuse.ko"
depmod -b "$root" "$rel"
install -m 755 tests/c/vm/init "$root/init"
install -m 755 "$work/target/x86_64-unknown-linux-gnu/release/rawgadget" "$root/bin/rawgadget"
for p in gadget_zero hid_keyboard errno_script errno_script_m32 ioctl_latency wakeup_floor; do
  [ -f "$work/cbin/$p" ] && install -m 755 "$work/cbin/$p" "$root/bin/$p"
done
(cd "$root" && find . | cpio -o -H newc --quiet) > "$work/initrd.cpio"

accel="${ACCEL:-tcg}"
cpu=max; [ "$accel" = kvm ] && cpu=host
exec timeout "${TMO:-1800}" qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -m 1024 -smp "${SMP:-2}" \
  -nodefaults -display none -no-reboot \
  -kernel "$image/boot/vmlinuz-$rel" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 quiet loglevel=4 cusevm.test=$test_name $extra" -serial stdio
