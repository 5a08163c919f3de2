//! Debian's 6.12 kernel for the guest, without installing it on the host: the image and headers
//! packages of one version (chosen at run time with apt-cache, real-kernel-bench.md "Packages"),
//! fetched with `apt-get download`, unpacked with `dpkg-deb -x` into the cache, indexed with depmod;
//! and the reference raw_gadget.ko built out of tree from linux-source-6.12 against those headers.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::host::{have, is_root, run};

/// A Debian kernel version such as `6.12.117+deb12`; the flavour is always `-amd64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelVersion {
    /// `6.12.117+deb12`
    pub abi: String,
    /// The upload number, for ordering.
    pub patch: u32,
}

impl KernelVersion {
    /// `6.12.117+deb12-amd64`, as `uname -r` prints it.
    pub fn release(&self) -> String {
        format!("{}-amd64", self.abi)
    }
    pub fn image_pkg(&self) -> String {
        format!("linux-image-{}-amd64-unsigned", self.abi)
    }
    pub fn headers_pkgs(&self) -> [String; 3] {
        [
            format!("linux-headers-{}-amd64", self.abi),
            format!("linux-headers-{}-common", self.abi),
            format!("linux-kbuild-{}", self.abi),
        ]
    }
}

/// Parses `linux-image-6.12.N+deb12-amd64-unsigned`.
pub fn parse_image_pkg(name: &str) -> Option<KernelVersion> {
    let abi = name
        .strip_prefix("linux-image-")?
        .strip_suffix("-amd64-unsigned")?;
    let rest = abi.strip_prefix("6.12.")?;
    let (n, suffix) = rest.split_once('+')?;
    if !suffix.starts_with("deb") || suffix.contains('-') {
        return None;
    }
    Some(KernelVersion {
        abi: abi.to_string(),
        patch: n.parse().ok()?,
    })
}

/// Package names matching `regex` that the apt lists offer (`apt-cache search --names-only`).
fn apt_names(regex: &str) -> Result<std::collections::HashSet<String>> {
    let out = run(Command::new("apt-cache").args(["search", "--names-only", regex]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

fn search_images() -> Result<Vec<KernelVersion>> {
    let mut v: Vec<KernelVersion> =
        apt_names(r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64-unsigned$")?
            .iter()
            .filter_map(|n| parse_image_pkg(n))
            .collect();
    v.sort_by_key(|k| std::cmp::Reverse(k.patch));
    Ok(v)
}

/// The newest 6.12 kernel whose image and all three headers packages the archive offers. Falls back
/// to the newest version already unpacked in the cache when apt is not usable.
pub fn choose_version(cache: &Path, requested: Option<&str>) -> Result<KernelVersion> {
    if let Some(r) = requested {
        return parse_image_pkg(&format!("linux-image-{r}-amd64-unsigned"))
            .ok_or_else(|| anyhow!("--kernel wants a version like 6.12.117+deb12, not {r:?}"));
    }
    if have("apt-cache") {
        let mut found = search_images()?;
        if found.is_empty() && is_root() {
            eprintln!("bench: no linux-image-6.12 in the apt lists; running apt-get update");
            run(Command::new("apt-get").arg("update"))?;
            found = search_images()?;
        }
        let others = apt_names(r"^linux-(headers|kbuild)-6\.12\.[0-9]+\+deb[0-9]+")?;
        for k in &found {
            if k.headers_pkgs().iter().all(|p| others.contains(p)) {
                return Ok(k.clone());
            }
            eprintln!(
                "bench: {} has no matching headers in the archive; trying an older one",
                k.image_pkg()
            );
        }
    }
    // No apt, or nothing found: use what the cache already holds.
    let mut cached: Vec<KernelVersion> = fs::read_dir(cache.join("kernel"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    parse_image_pkg(&format!(
                        "linux-image-{}-amd64-unsigned",
                        e.file_name().to_string_lossy()
                    ))
                })
                .filter(|k| cache.join("kernel").join(&k.abi).join("ready").exists())
                .collect()
        })
        .unwrap_or_default();
    cached.sort_by_key(|k| std::cmp::Reverse(k.patch));
    cached.into_iter().next().ok_or_else(|| {
        anyhow!(
            "no Debian 6.12 kernel available: apt-cache found no linux-image-6.12.N+deb12-amd64-unsigned with \
             matching linux-headers-6.12.N+deb12-amd64, and nothing is cached in {}. On Debian 12, enable \
             bookworm-security (or bookworm-backports) and run apt-get update.",
            cache.display()
        )
    })
}

/// `apt-get download PKG` into `debs/` unless a `.deb` of that package is already there.
pub fn download(debs: &Path, pkg: &str) -> Result<PathBuf> {
    fs::create_dir_all(debs)?;
    let find = || -> Option<PathBuf> {
        fs::read_dir(debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    if !have("apt-get") {
        bail!(
            "{pkg} is not in {} and there is no apt-get to download it",
            debs.display()
        );
    }
    eprintln!("bench: apt-get download {pkg}");
    run(Command::new("apt-get")
        .arg("download")
        .arg(pkg)
        .current_dir(debs))
    .with_context(|| format!("downloading {pkg} (as root, `apt-get update` may help)"))?;
    find().ok_or_else(|| anyhow!("apt-get download {pkg} left no .deb in {}", debs.display()))
}

/// The unpacked kernel: image tree, headers tree, release string.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub version: KernelVersion,
    /// `dpkg-deb -x` of the image package.
    pub image: PathBuf,
    /// `dpkg-deb -x` of the headers, common headers and kbuild packages.
    pub headers_root: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.image
            .join("boot")
            .join(format!("vmlinuz-{}", self.version.release()))
    }
    pub fn modules_dir(&self) -> PathBuf {
        self.image.join("lib/modules").join(self.version.release())
    }
    /// The directory `make -C` goes to (the image's `build` link, inside the cache).
    pub fn build_dir(&self) -> PathBuf {
        self.headers_root
            .join("usr/src")
            .join(format!("linux-headers-{}", self.version.release()))
    }
}

/// Downloads and unpacks the kernel of `v` into `cache/kernel/<abi>/`, depmods the image's modules,
/// and points the headers' Makefile at the unpacked common headers. Idempotent: a `ready` marker
/// skips everything on later runs.
pub fn prepare(cache: &Path, v: &KernelVersion) -> Result<Kernel> {
    let dir = cache.join("kernel").join(&v.abi);
    let k = Kernel {
        version: v.clone(),
        image: dir.join("image"),
        headers_root: dir.join("headers"),
    };
    if dir.join("ready").exists() {
        return Ok(k);
    }
    let debs = cache.join("debs");
    let image_deb = download(&debs, &v.image_pkg())?;
    let header_debs: Vec<PathBuf> = v
        .headers_pkgs()
        .iter()
        .map(|p| download(&debs, p))
        .collect::<Result<_>>()?;
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&k.image)?;
    fs::create_dir_all(&k.headers_root)?;
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&image_deb)
        .arg(&k.image))?;
    for d in &header_debs {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(d)
            .arg(&k.headers_root))?;
    }
    if !k.vmlinuz().exists() {
        bail!("{} has no {}", image_deb.display(), k.vmlinuz().display());
    }
    // The headers' Makefile includes the common headers by absolute path under /usr/src.
    let mk = k.build_dir().join("Makefile");
    let text = fs::read_to_string(&mk).with_context(|| format!("reading {}", mk.display()))?;
    let fixed = text.replace(
        "include /usr/src/",
        &format!("include {}/usr/src/", k.headers_root.display()),
    );
    fs::write(&mk, fixed)?;
    // Debian ships no module index; build one so dependencies can be resolved.
    run(Command::new("depmod")
        .arg("-b")
        .arg(&k.image)
        .arg(v.release()))?;
    fs::write(dir.join("ready"), "")?;
    Ok(k)
}

/// Module name as modprobe and depmod compare them (`-` and `_` are the same).
pub fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// Parses modules.dep: module name → (path relative to the modules dir, dependency paths).
pub fn parse_modules_dep(text: &str) -> HashMap<String, (String, Vec<String>)> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let Some((path, deps)) = line.split_once(':') else {
            continue;
        };
        let file = path.rsplit('/').next().unwrap_or(path);
        let name = file.split(".ko").next().unwrap_or(file);
        map.insert(
            norm(name),
            (
                path.to_string(),
                deps.split_whitespace().map(str::to_string).collect(),
            ),
        );
    }
    map
}

/// The module files (relative paths) needed to load `wanted`, dependencies included.
///
/// # Errors
/// A module that is not in the index, naming the module so the user can see which option Debian
/// lacks (for example vhci-hcd).
pub fn closure(
    dep: &HashMap<String, (String, Vec<String>)>,
    wanted: &[&str],
) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let by_path: HashMap<&str, &Vec<String>> = dep.values().map(|(p, d)| (p.as_str(), d)).collect();
    let mut stack: Vec<String> = Vec::new();
    for w in wanted {
        let (path, _) = dep
            .get(&norm(w))
            .ok_or_else(|| anyhow!("kernel module {w} is not in this kernel's modules"))?;
        stack.push(path.clone());
    }
    while let Some(p) = stack.pop() {
        if out.insert(p.clone()) {
            if let Some(d) = by_path.get(p.as_str()) {
                stack.extend(d.iter().cloned());
            }
        }
    }
    Ok(out)
}

/// Modules the guest loads (real-kernel-bench.md "The Debian 6.12 kernel").
pub const GUEST_MODULES: &[&str] = &[
    "dummy_hcd",
    "cuse",
    "usbtest",
    "configfs",
    "libcomposite",
    "usb_f_ss_lb",
    "vhci-hcd",
    "usbip-core",
    "usbip-vudc",
    "usbhid",
    "hid-generic",
    "evdev",
    "udc-core",
    "usbcore",
    "usb-common",
];

/// Where linux-source-6.12's tarball is: the installed package's, or one unpacked from a downloaded
/// `.deb` into the cache.
pub fn source_tarball(cache: &Path) -> Result<(PathBuf, String)> {
    let installed = PathBuf::from("/usr/src/linux-source-6.12.tar.xz");
    if installed.exists() {
        let ver =
            run(Command::new("dpkg-query").args(["-W", "-f=${Version}", "linux-source-6.12"]))
                .unwrap_or_else(|_| "installed".into());
        return Ok((installed, ver));
    }
    let deb = download(&cache.join("debs"), "linux-source-6.12")?;
    let ver = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .arg("Version"))?
    .trim()
    .to_string();
    let dir = cache.join("linux-source").join(&ver);
    let tarball = dir.join("usr/src/linux-source-6.12.tar.xz");
    if !tarball.exists() {
        fs::create_dir_all(&dir)?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    }
    Ok((tarball, ver))
}

/// Files the bench takes from linux-source-6.12.
pub const SOURCE_FILES: &[&str] = &[
    "drivers/usb/gadget/legacy/raw_gadget.c",
    "include/uapi/linux/usb/raw_gadget.h",
    DUMMY_HCD_SOURCE,
];

/// dummy_hcd's source in linux-source-6.12, rebuilt with [`DUMMY_HCD_HALT_FIX`].
pub const DUMMY_HCD_SOURCE: &str = "drivers/usb/gadget/udc/dummy_hcd.c";

/// Extracts [`SOURCE_FILES`] into `cache/src/<version>/` once (the tarball is ~150 MB of xz).
pub fn extract_sources(cache: &Path) -> Result<PathBuf> {
    let (tarball, ver) = source_tarball(cache)?;
    let dir = cache.join("src").join(&ver);
    if SOURCE_FILES
        .iter()
        .all(|f| dir.join("linux-source-6.12").join(f).exists())
    {
        return Ok(dir.join("linux-source-6.12"));
    }
    fs::create_dir_all(&dir)?;
    let members: Vec<String> = SOURCE_FILES
        .iter()
        .map(|f| format!("linux-source-6.12/{f}"))
        .collect();
    run(Command::new("tar")
        .arg("-xJf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir)
        .args(&members))?;
    Ok(dir.join("linux-source-6.12"))
}

/// Builds raw_gadget.ko out of tree against the image's headers: a Kbuild with `obj-m :=
/// raw_gadget.o`, the 6.12 UAPI header where the source includes it (`<uapi/linux/usb/...>`), and
/// `make -C <headers> M=<dir>`.
pub fn build_raw_gadget(cache: &Path, k: &Kernel, src: &Path) -> Result<PathBuf> {
    let dir = cache.join("raw_gadget").join(&k.version.abi);
    let c = src.join(SOURCE_FILES[0]);
    let h = src.join(SOURCE_FILES[1]);
    let stamp_text = format!("{}\n", c.display());
    build_module(k, &dir, "raw_gadget", &stamp_text, |dir| {
        fs::create_dir_all(dir.join("include/uapi/linux/usb"))?;
        fs::copy(&c, dir.join("raw_gadget.c"))?;
        fs::copy(&h, dir.join("include/uapi/linux/usb/raw_gadget.h"))?;
        Ok("ccflags-y := -I$(src)/include\n")
    })
}

/// The stock 6.12 `dummy_set_halt_and_wedge` writes the endpoint's `halted`/`wedged` bitfields
/// without `dum->lock`, while `dummy_timer` rewrites the same word (`already_seen`, `setup_stage`)
/// under the lock every 125 µs. A raw-gadget program's EP0_STALL lands there from process
/// context, so now and then one side's write is lost: the stall vanishes and usbtest case 10 hangs
/// for the Rust and the C Gadget Zero alike. The rebuilt module takes the lock, as dummy_queue and
/// dummy_dequeue do; the gadget callbacks run with the lock dropped, so it cannot deadlock.
pub const DUMMY_HCD_HALT_FIX: (&str, &str) = (
    "\tif (!_ep)
\t\treturn -EINVAL;
\tep = usb_ep_to_dummy_ep(_ep);
\tdum = ep_to_dummy(ep);
\tif (!dum->driver)
\t\treturn -ESHUTDOWN;
\tif (!value)
\t\tep->halted = ep->wedged = 0;
\telse if (ep->desc && (ep->desc->bEndpointAddress & USB_DIR_IN) &&
\t\t\t!list_empty(&ep->queue))
\t\treturn -EAGAIN;
\telse {
\t\tep->halted = 1;
\t\tif (wedged)
\t\t\tep->wedged = 1;
\t}
\t/* FIXME clear emulated data toggle too */
\treturn 0;
}",
    "\tunsigned long\t\tflags;
\tint\t\t\tret = 0;

\tif (!_ep)
\t\treturn -EINVAL;
\tep = usb_ep_to_dummy_ep(_ep);
\tdum = ep_to_dummy(ep);
\tspin_lock_irqsave(&dum->lock, flags);
\tif (!dum->driver)
\t\tret = -ESHUTDOWN;
\telse if (!value)
\t\tep->halted = ep->wedged = 0;
\telse if (ep->desc && (ep->desc->bEndpointAddress & USB_DIR_IN) &&
\t\t\t!list_empty(&ep->queue))
\t\tret = -EAGAIN;
\telse {
\t\tep->halted = 1;
\t\tif (wedged)
\t\t\tep->wedged = 1;
\t}
\tspin_unlock_irqrestore(&dum->lock, flags);
\t/* FIXME clear emulated data toggle too */
\treturn ret;
}",
);

/// `source` with [`DUMMY_HCD_HALT_FIX`] applied, or an error naming what did not match (another
/// kernel version's dummy_hcd.c).
pub fn patch_dummy_hcd(source: &str) -> Result<String> {
    let (from, to) = DUMMY_HCD_HALT_FIX;
    match source.matches(from).count() {
        1 => Ok(source.replacen(from, to, 1)),
        n => bail!(
            "{DUMMY_HCD_SOURCE}: the body of dummy_set_halt_and_wedge to patch was found {n} times \
             (expected once); use --stock-dummy-hcd with this kernel"
        ),
    }
}

/// Builds dummy_hcd.ko out of tree from linux-source-6.12 with [`DUMMY_HCD_HALT_FIX`].
pub fn build_dummy_hcd(cache: &Path, k: &Kernel, src: &Path) -> Result<PathBuf> {
    let dir = cache.join("dummy_hcd").join(&k.version.abi);
    let c = src.join(DUMMY_HCD_SOURCE);
    let patched = patch_dummy_hcd(
        &fs::read_to_string(&c).with_context(|| format!("reading {}", c.display()))?,
    )?;
    let stamp_text = format!("{}\n{}\n", c.display(), patched.len());
    build_module(k, &dir, "dummy_hcd", &stamp_text, |dir| {
        fs::write(dir.join("dummy_hcd.c"), &patched)?;
        Ok("")
    })
}

/// Builds `<name>.ko` in `dir` (kept while `stamp_text` is unchanged): `setup` puts the sources in
/// place and returns extra Kbuild lines, then `make -C <headers> M=<dir>`. BTF generation is switched
/// off: it needs pahole and the guest does not use module BTF.
fn build_module(
    k: &Kernel,
    dir: &Path,
    name: &str,
    stamp_text: &str,
    setup: impl FnOnce(&Path) -> Result<&'static str>,
) -> Result<PathBuf> {
    let ko = dir.join(format!("{name}.ko"));
    let stamp = dir.join("source");
    if ko.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(stamp_text) {
        return Ok(ko);
    }
    fs::create_dir_all(dir)?;
    let kbuild_extra = setup(dir)?;
    fs::write(
        dir.join("Kbuild"),
        format!("obj-m := {name}.o\n{kbuild_extra}"),
    )?;
    run(Command::new("make")
        .arg("-C")
        .arg(k.build_dir())
        .arg(format!("M={}", dir.display()))
        .arg("CONFIG_DEBUG_INFO_BTF_MODULES=")
        .arg("modules"))
    .with_context(|| format!("building {name}.ko"))?;
    if !ko.exists() {
        bail!("make finished but {} is missing", ko.display());
    }
    fs::write(&stamp, stamp_text)?;
    Ok(ko)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The halt fix: applied exactly once, and no return between taking and dropping the lock.
    #[test]
    fn dummy_hcd_halt_fix_takes_the_lock_on_every_path() {
        let function = format!(
            "static int\ndummy_set_halt_and_wedge(struct usb_ep *_ep, int value, int wedged)\n{{\n\tstruct dummy_ep\t\t*ep;\n\tstruct dummy\t\t*dum;\n\n{}\n",
            DUMMY_HCD_HALT_FIX.0
        );
        let patched = patch_dummy_hcd(&function).unwrap();
        let locked = &patched[patched.find("spin_lock_irqsave(&dum->lock").unwrap()
            ..patched.find("spin_unlock_irqrestore(&dum->lock").unwrap()];
        assert!(!locked.contains("return"), "{locked}");
        assert!(locked.contains("ep->halted = 1;"));
        assert!(patched.ends_with("return ret;\n}\n"));
        let err = patch_dummy_hcd("int main(void) { return 0; }").unwrap_err();
        assert!(format!("{err}").contains("found 0 times"), "{err}");
        let twice = format!("{function}{function}");
        assert!(patch_dummy_hcd(&twice).is_err());
    }

    #[test]
    fn image_package_names() {
        let k = parse_image_pkg("linux-image-6.12.117+deb12-amd64-unsigned").unwrap();
        assert_eq!(k.abi, "6.12.117+deb12");
        assert_eq!(k.patch, 117);
        assert_eq!(k.release(), "6.12.117+deb12-amd64");
        assert_eq!(k.headers_pkgs()[0], "linux-headers-6.12.117+deb12-amd64");
        assert!(parse_image_pkg("linux-image-6.12.117+deb12-rt-amd64-unsigned").is_none());
        assert!(parse_image_pkg("linux-image-6.12.117+deb12-cloud-amd64-unsigned").is_none());
        assert!(parse_image_pkg("linux-image-6.1.0-30-amd64-unsigned").is_none());
    }

    #[test]
    fn closure_follows_dependencies_and_names_missing_modules() {
        let dep = parse_modules_dep(
            "kernel/drivers/usb/gadget/udc/dummy_hcd.ko.xz: kernel/drivers/usb/gadget/udc/udc-core.ko.xz kernel/drivers/usb/core/usbcore.ko.xz\n\
             kernel/drivers/usb/gadget/udc/udc-core.ko.xz: kernel/drivers/usb/common/usb-common.ko.xz\n\
             kernel/drivers/usb/core/usbcore.ko.xz: kernel/drivers/usb/common/usb-common.ko.xz\n\
             kernel/drivers/usb/common/usb-common.ko.xz:\n",
        );
        let c = closure(&dep, &["dummy-hcd"]).unwrap();
        assert_eq!(c.len(), 4);
        let e = closure(&dep, &["vhci-hcd"]).unwrap_err();
        assert!(e.to_string().contains("vhci-hcd"));
    }
}
