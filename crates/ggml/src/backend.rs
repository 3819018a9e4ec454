//! Backends (CPU; CUDA and Metal behind features), devices, backend buffers, and the scheduler
//! that runs one graph across a GPU and the CPU.

use crate::{ffi, GgmlError};
use std::collections::BTreeSet;
use std::ffi::CStr;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Mutex;

/// Addresses of the live buffers marked as weights: the scheduler places ops by them, and a
/// graph with no op it can place makes it abort, so the graph checks first (`graph.rs`).
static WEIGHT_BUFFERS: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

/// Whether `buffer` is a live weights buffer.
pub(crate) fn is_weight_buffer(buffer: *mut std::ffi::c_void) -> bool {
    !buffer.is_null()
        && WEIGHT_BUFFERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(buffer as usize))
}

/// What kind of compute device a backend drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
    Metal,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Metal => "metal",
        }
    }
}

/// A GPU this build can use.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub kind: DeviceKind,
    pub index: usize,
    pub description: String,
}

/// The GPU kinds compiled into this build (empty for the default CPU build).
pub fn gpu_kinds() -> &'static [DeviceKind] {
    if cfg!(feature = "cuda") {
        &[DeviceKind::Cuda]
    } else if cfg!(feature = "metal") {
        &[DeviceKind::Metal]
    } else {
        &[]
    }
}

/// The GPUs present, for the backends compiled in. Empty without a GPU backend or device (a
/// CUDA build needs the driver's libcuda.so.1 to start at all). Creates no device context.
pub fn gpu_devices() -> Vec<DeviceInfo> {
    #[allow(unused_mut)]
    let mut out = Vec::new();
    #[cfg(feature = "cuda")]
    {
        for i in 0..cuda_device_count() as i32 {
            let mut desc = [0 as std::ffi::c_char; 256];
            // SAFETY: i < device count; the buffer is 256 bytes and ggml writes a NUL-terminated
            // string of at most that size (from cudaGetDeviceProperties: no context is made).
            unsafe {
                ffi::ggml_backend_cuda_get_device_description(i, desc.as_mut_ptr(), desc.len());
            }
            desc[desc.len() - 1] = 0;
            // SAFETY: NUL-terminated (forced above).
            let description = unsafe { CStr::from_ptr(desc.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            out.push(DeviceInfo {
                kind: DeviceKind::Cuda,
                index: i as usize,
                description,
            });
        }
    }
    #[cfg(feature = "metal")]
    {
        out.push(DeviceInfo {
            kind: DeviceKind::Metal,
            index: 0,
            description: "Metal (default device)".into(),
        });
    }
    out
}

/// CUDA devices present (0 when no driver/device is usable).
#[cfg(feature = "cuda")]
fn cuda_device_count() -> usize {
    // SAFETY: plain query; initialises CUDA once and returns 0 when it cannot.
    unsafe { ffi::ggml_backend_cuda_get_device_count() }.max(0) as usize
}

/// Free and total memory of one device in bytes, `None` where the backend cannot tell (Metal
/// in this ggml). For CUDA this makes the device's context (a few hundred MiB of its memory),
/// so it is asked only of the device about to be used.
pub fn device_memory(kind: DeviceKind, index: usize) -> Option<(u64, u64)> {
    #[cfg(feature = "cuda")]
    if kind == DeviceKind::Cuda && index < cuda_device_count() {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: index < device count (checked); free/total are valid out-pointers.
        unsafe { ffi::ggml_backend_cuda_get_device_memory(index as i32, &mut free, &mut total) };
        return Some((free as u64, total as u64));
    }
    let _ = (kind, index);
    None
}

struct BackendInner {
    raw: NonNull<std::ffi::c_void>,
    kind: DeviceKind,
}

impl Drop for BackendInner {
    fn drop(&mut self) {
        // SAFETY: created by a ggml_backend_*_init and freed once (the last Rc owner).
        unsafe { ffi::ggml_backend_free(self.raw.as_ptr()) }
    }
}

/// A ggml compute backend. Cloning shares it; it is freed when the last clone (including the
/// ones kept by buffers and schedulers made on it) is dropped.
#[derive(Clone)]
pub struct Backend(Rc<BackendInner>);

impl Backend {
    fn wrap(raw: ffi::ggml_backend_t, kind: DeviceKind) -> Result<Self, GgmlError> {
        let raw = NonNull::new(raw)
            .ok_or_else(|| GgmlError::Backend(format!("{} backend init failed", kind.name())))?;
        Ok(Backend(Rc::new(BackendInner { raw, kind })))
    }

    /// The CPU backend with `n_threads` threads.
    pub fn cpu(n_threads: usize) -> Result<Self, GgmlError> {
        // SAFETY: plain constructor; returns null on failure.
        let b = Self::wrap(unsafe { ffi::ggml_backend_cpu_init() }, DeviceKind::Cpu)?;
        b.set_n_threads(n_threads);
        Ok(b)
    }

    /// A GPU backend: CUDA device `index`, or Metal (index 0). Fails with a clear message when
    /// the build has no such backend or the device does not exist.
    pub fn gpu(kind: DeviceKind, index: usize) -> Result<Self, GgmlError> {
        let missing = |what: &str| {
            Err(GgmlError::Backend(format!(
                "{what}: this glmtool was built without it (build with --features {})",
                kind.name()
            )))
        };
        match kind {
            DeviceKind::Cpu => Err(GgmlError::Backend("the CPU is not a GPU".into())),
            DeviceKind::Cuda => {
                #[cfg(feature = "cuda")]
                {
                    let n = cuda_device_count();
                    if index >= n {
                        return Err(GgmlError::Backend(format!(
                            "CUDA device {index} does not exist ({n} found)"
                        )));
                    }
                    // SAFETY: index < device count (checked); returns null on failure.
                    return Self::wrap(unsafe { ffi::ggml_backend_cuda_init(index as i32) }, kind);
                }
                #[allow(unreachable_code)]
                {
                    let _ = index;
                    missing("CUDA")
                }
            }
            DeviceKind::Metal => {
                #[cfg(feature = "metal")]
                {
                    if index != 0 {
                        return Err(GgmlError::Backend("Metal has one device: metal:0".into()));
                    }
                    // SAFETY: plain constructor; returns null when no Metal device is usable.
                    return Self::wrap(unsafe { ffi::ggml_backend_metal_init() }, kind);
                }
                #[allow(unreachable_code)]
                missing("Metal")
            }
        }
    }

    pub fn kind(&self) -> DeviceKind {
        self.0.kind
    }

    /// Sets the thread count (CPU backend only; ignored elsewhere).
    pub fn set_n_threads(&self, n: usize) {
        if self.kind() == DeviceKind::Cpu {
            // SAFETY: self is a live CPU backend.
            unsafe { ffi::ggml_backend_cpu_set_n_threads(self.raw(), n.clamp(1, 512) as i32) };
        }
    }

    pub fn name(&self) -> String {
        // SAFETY: live backend; ggml returns a static NUL-terminated name.
        let p = unsafe { ffi::ggml_backend_name(self.raw()) };
        if p.is_null() {
            return "?".into();
        }
        // SAFETY: non-null static C string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    pub(crate) fn raw(&self) -> ffi::ggml_backend_t {
        self.0.raw.as_ptr()
    }

    /// The buffer type for the CPU side of a scheduler that works with this GPU backend:
    /// pinned host memory for CUDA (faster copies), else our exact-size CPU buffers (ggml's own
    /// CPU buffers over-report their size, which corrupts the heap when the compute buffer is
    /// reused: see host_buffer.rs).
    fn host_buffer_type_for(gpu: Option<&Backend>) -> ffi::ggml_backend_buffer_type_t {
        #[cfg(feature = "cuda")]
        if gpu.is_some_and(|g| g.kind() == DeviceKind::Cuda) {
            // SAFETY: a static buffer type object; CUDA is initialised (a CUDA backend exists).
            return unsafe { ffi::ggml_backend_cuda_host_buffer_type() };
        }
        let _ = gpu;
        crate::host_buffer::exact_cpu_buffer_type()
    }
}

/// A backend buffer, freed on drop.
pub(crate) struct Buffer(NonNull<std::ffi::c_void>);

impl Buffer {
    pub(crate) fn from_raw(raw: ffi::ggml_backend_buffer_t) -> Option<Self> {
        NonNull::new(raw).map(Buffer)
    }
    pub(crate) fn raw(&self) -> ffi::ggml_backend_buffer_t {
        self.0.as_ptr()
    }
    pub(crate) fn size(&self) -> usize {
        // SAFETY: live buffer.
        unsafe { ffi::ggml_backend_buffer_get_size(self.raw()) }
    }
    pub(crate) fn clear(&self, v: u8) {
        // SAFETY: live buffer; clears its own memory.
        unsafe { ffi::ggml_backend_buffer_clear(self.raw(), v) }
    }
    /// Marks the buffer as holding weights (the scheduler runs ops on the weights' backend).
    pub(crate) fn mark_weights(&self) {
        // SAFETY: live buffer; sets a flag.
        unsafe { ffi::ggml_backend_buffer_set_usage(self.raw(), ffi::BUFFER_USAGE_WEIGHTS) };
        WEIGHT_BUFFERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.raw() as usize);
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        WEIGHT_BUFFERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(self.raw() as usize));
        // SAFETY: the buffer was returned by ggml and is freed once.
        unsafe { ffi::ggml_backend_buffer_free(self.raw()) }
    }
}

/// ggml's backend scheduler over an optional GPU backend and the CPU backend. Each op runs where
/// its weights (or the cache it writes) live; the rest follows its neighbours; tensors crossing
/// between the two are copied. Intermediate tensors live in one reusable compute buffer per
/// backend. With the CPU alone it is a plain graph allocator and runner.
pub struct Scheduler {
    raw: NonNull<std::ffi::c_void>,
    gpu: Option<Backend>,
    cpu: Backend,
    max_nodes: usize,
}

impl Scheduler {
    /// `max_nodes`: the most nodes a graph run through it may have.
    pub fn new(gpu: Option<&Backend>, cpu: &Backend, max_nodes: usize) -> Result<Self, GgmlError> {
        if cpu.kind() != DeviceKind::Cpu || gpu.is_some_and(|g| g.kind() == DeviceKind::Cpu) {
            return Err(GgmlError::Backend(
                "a scheduler takes one GPU backend and the CPU backend".into(),
            ));
        }
        let mut backends: Vec<ffi::ggml_backend_t> =
            gpu.iter().map(|g| g.raw()).chain([cpu.raw()]).collect();
        let mut bufts: Vec<ffi::ggml_backend_buffer_type_t> = gpu
            .iter()
            // SAFETY: live backend; its default buffer type is a static object.
            .map(|g| unsafe { ffi::ggml_backend_get_default_buffer_type(g.raw()) })
            .chain([Backend::host_buffer_type_for(gpu)])
            .collect();
        for (&b, &t) in backends.iter().zip(&bufts) {
            // SAFETY: live backend and static buffer type; pure query (ggml asserts it).
            if !unsafe { ffi::ggml_backend_buft_supports_backend(t, b) } {
                return Err(GgmlError::Backend(
                    "compute buffer type does not suit its backend".into(),
                ));
            }
        }
        // The hash set of the scheduler holds every node and leaf: twice the node budget.
        // SAFETY: 1 or 2 live backends, the last the CPU (checked), matching buffer types
        // (checked); ggml copies both arrays.
        let raw = unsafe {
            ffi::ggml_backend_sched_new(
                backends.as_mut_ptr(),
                bufts.as_mut_ptr(),
                backends.len() as i32,
                2 * max_nodes,
                false,
            )
        };
        Ok(Scheduler {
            raw: NonNull::new(raw)
                .ok_or_else(|| GgmlError::Backend("ggml_backend_sched_new failed".into()))?,
            gpu: gpu.cloned(),
            cpu: cpu.clone(),
            max_nodes,
        })
    }

    pub(crate) fn raw(&self) -> ffi::ggml_backend_sched_t {
        self.raw.as_ptr()
    }

    pub fn max_nodes(&self) -> usize {
        self.max_nodes
    }

    /// Bytes of the GPU's compute buffer (0 without a GPU).
    pub fn gpu_buffer_size(&self) -> usize {
        self.gpu.as_ref().map_or(0, |g| {
            // SAFETY: live scheduler and one of its backends.
            unsafe { ffi::ggml_backend_sched_get_buffer_size(self.raw(), g.raw()) }
        })
    }

    /// Bytes of the CPU's compute buffer.
    pub fn cpu_buffer_size(&self) -> usize {
        // SAFETY: live scheduler and one of its backends.
        unsafe { ffi::ggml_backend_sched_get_buffer_size(self.raw(), self.cpu.raw()) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: created by ggml_backend_sched_new, freed once; its backends (kept alive by
        // the Backend clones in self) are freed after it.
        unsafe { ffi::ggml_backend_sched_free(self.raw()) }
    }
}
