//! `--device`: validated against the backends compiled into this binary, so a wrong name is a
//! clean error rather than a panic inside burn's `Device::default()`.

use anyhow::{Context, bail};
use burn::tensor::Device;

/// Backends compiled in (Cargo features of this crate).
pub const COMPILED: &[&str] = &[
    #[cfg(feature = "flex")]
    "flex",
    #[cfg(feature = "ndarray")]
    "ndarray",
    #[cfg(feature = "wgpu")]
    "wgpu",
];

/// A validated device choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `BURN_DEVICE` if set (validated), else burn's default order.
    Auto,
    Backend(&'static str),
}

impl Choice {
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        let name = name.trim().to_ascii_lowercase();
        if name == "auto" {
            if let Ok(env) = std::env::var("BURN_DEVICE") {
                Self::backend(&env.to_ascii_lowercase())
                    .context("environment variable BURN_DEVICE")?;
            }
            return Ok(Self::Auto);
        }
        Self::backend(&name).map(Self::Backend).context("--device")
    }

    fn backend(name: &str) -> anyhow::Result<&'static str> {
        if COMPILED.is_empty() {
            bail!("this binary was built without any backend feature (flex, ndarray, wgpu)");
        }
        match COMPILED.iter().find(|&&b| b == name) {
            Some(b) => Ok(b),
            None => bail!(
                "unknown or not compiled backend {name:?}; compiled: {}",
                COMPILED.join(", ")
            ),
        }
    }
}

/// The burn device for a validated choice (burn's `Device::default()` reads `BURN_DEVICE`).
pub fn resolve(choice: &Choice) -> anyhow::Result<Device> {
    if COMPILED.is_empty() {
        bail!("this binary was built without any backend feature (flex, ndarray, wgpu)");
    }
    if let Choice::Backend(name) = choice {
        // SAFETY: called from the main thread before any other thread is started by this
        // program (the subcommands that spawn threads resolve the device first).
        unsafe { std::env::set_var("BURN_DEVICE", name) };
    }
    Ok(Device::default())
}

/// Images per forward pass when `--batch-size` is not given: 1 on ndarray (burn's ops hold a
/// whole batch's activations, and larger batches were not faster there), else 8 (on flex the
/// vision tower's fused path runs a batch's images side by side, one per thread, with no
/// hand-offs between threads; on GPUs a batch fills the device).
pub fn default_image_batch(device: &Device) -> u32 {
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // burn-ndarray is deprecated in burn 0.22 but still supported here
    if *device == Device::ndarray() {
        return 1;
    }
    let _ = device;
    8
}
