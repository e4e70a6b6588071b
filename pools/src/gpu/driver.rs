//! `CudaDriver`: the CUDA driver API calls poolbench needs, safe to call on a machine
//! without CUDA.
//!
//! `cudarc` loads `libcuda.so` at run time and panics when it, or one of its symbols, is
//! missing. [`probe`] therefore checks, once per process and in this order, that the library
//! loads, that every symbol used here exists, that `cuInit` succeeds and that there is a
//! device; every entry point goes through it, so a machine without a GPU gets an error
//! ("CUDA driver not found (libcuda.so): ...") and never a panic.
//!
//! Calls bind the device's primary context to the calling thread first (cached per thread),
//! so handles can be used from any worker thread.

use cudarc::driver::sys;
use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// A failed driver call: the call, the CUDA error name and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaError {
    pub call: &'static str,
    /// `CUDA_ERROR_*` name, or `None` when the failure is poolbench's own (no driver, ...).
    pub code: Option<String>,
    pub message: String,
}

impl CudaError {
    fn plain(call: &'static str, message: impl Into<String>) -> Self {
        CudaError {
            call,
            code: None,
            message: message.into(),
        }
    }

    /// The device is out of memory (`CUDA_ERROR_OUT_OF_MEMORY`).
    pub fn is_out_of_memory(&self) -> bool {
        self.code.as_deref() == Some("CUDA_ERROR_OUT_OF_MEMORY")
    }
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} failed: {code} ({})", self.call, self.message),
            None => write!(f, "{}: {}", self.call, self.message),
        }
    }
}

impl std::error::Error for CudaError {}

/// Every driver symbol this module calls, as `cudarc` loads them.
const REQUIRED_SYMBOLS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetName",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2",
    "cuCtxSetCurrent",
    "cuCtxSynchronize",
    "cuGetErrorName",
    "cuGetErrorString",
    "cuMemGetInfo_v2",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemAllocAsync",
    "cuMemFreeAsync",
    "cuDeviceGetDefaultMemPool",
    "cuMemPoolSetAttribute",
    "cuMemPoolGetAttribute",
    "cuMemPoolTrimTo",
    "cuDeviceTotalMem_v2",
    "cuDeviceGetAttribute",
    "cuMemHostAlloc",
    "cuMemFreeHost",
    "cuMemAllocManaged",
    "cuStreamCreate",
    "cuStreamDestroy_v2",
    "cuStreamSynchronize",
    "cuStreamWaitEvent",
    "cuEventCreate",
    "cuEventDestroy_v2",
    "cuEventRecord",
    "cuMemcpyHtoD_v2",
    "cuMemcpyDtoH_v2",
    "cuMemcpyDtoD_v2",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuMemcpyDtoDAsync_v2",
    "cuMemsetD8_v2",
    "cuMemsetD8Async",
];

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverInfo {
    /// `cuDriverGetVersion`: 12090 for CUDA 12.9.
    pub driver_version: i32,
    pub device_count: u32,
}

/// Check, once per process, that CUDA can be used here. `Err` says why not.
pub fn probe() -> Result<DriverInfo, CudaError> {
    static PROBE: OnceLock<Result<DriverInfo, CudaError>> = OnceLock::new();
    PROBE.get_or_init(probe_uncached).clone()
}

fn probe_uncached() -> Result<DriverInfo, CudaError> {
    // SAFETY: `is_culib_present` only tries to open the library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err(CudaError::plain(
            "probe",
            "CUDA driver not found (libcuda.so): no NVIDIA driver library could be loaded \
             (install the NVIDIA driver, or add its directory to LD_LIBRARY_PATH)",
        ));
    }
    // SAFETY: the library is present (checked above), so `culib` loads it instead of
    // panicking; looking a symbol up does not call it.
    let lib = unsafe { sys::culib() };
    for name in REQUIRED_SYMBOLS {
        // SAFETY: the symbol is only looked up, never called through this type.
        if unsafe { lib.get::<unsafe extern "C" fn()>(name.as_bytes()) }.is_err() {
            return Err(CudaError::plain(
                "probe",
                format!("CUDA driver too old: libcuda.so has no `{name}` (CUDA 11.2+ needed)"),
            ));
        }
    }
    // SAFETY: every symbol used from here on exists (checked above); the calls take plain
    // values and out-pointers to locals.
    unsafe {
        check("cuInit", sys::cuInit(0))?;
        let mut version = 0;
        check("cuDriverGetVersion", sys::cuDriverGetVersion(&mut version))?;
        let mut count = 0;
        check("cuDeviceGetCount", sys::cuDeviceGetCount(&mut count))?;
        if count <= 0 {
            return Err(CudaError::plain(
                "probe",
                "the CUDA driver is installed but reports no CUDA device",
            ));
        }
        Ok(DriverInfo {
            driver_version: version,
            device_count: count as u32,
        })
    }
}

fn check(call: &'static str, result: sys::CUresult) -> Result<(), CudaError> {
    if result == sys::CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    let text = |f: unsafe fn(sys::CUresult, *mut *const c_char) -> sys::CUresult| {
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: the driver is loaded (every call site runs after `probe`) and writes a
        // pointer to a static NUL-terminated string, or leaves it null.
        let ok = unsafe { f(result, &mut p) } == sys::CUresult::CUDA_SUCCESS;
        if ok && !p.is_null() {
            // SAFETY: non-null pointers from cuGetError* point to static C strings.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        } else {
            format!("{result:?}")
        }
    };
    Err(CudaError {
        call,
        code: Some(text(sys::cuGetErrorName)),
        message: text(sys::cuGetErrorString),
    })
}

thread_local! {
    /// The context this module last made current on this thread.
    static BOUND_CONTEXT: Cell<usize> = const { Cell::new(0) };
}

struct Inner {
    ordinal: u32,
    device: sys::CUdevice,
    context: sys::CUcontext,
    name: String,
}

// SAFETY: a CUDA context handle may be used from any thread once made current there, which
// `CudaDriver::bind` does before every call.
unsafe impl Send for Inner {}
// SAFETY: as above; the driver API is thread-safe for these calls.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        // SAFETY: the primary context was retained once in `CudaDriver::open`.
        unsafe { sys::cuDevicePrimaryCtxRelease_v2(self.device) };
        BOUND_CONTEXT.with(|b| {
            if b.get() == self.context as usize {
                b.set(0)
            }
        });
    }
}

/// A handle on one device's primary context; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct CudaDriver {
    inner: Arc<Inner>,
}

impl fmt::Debug for CudaDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CudaDriver(device {}: {})",
            self.inner.ordinal, self.inner.name
        )
    }
}

/// A CUDA stream; destroyed on drop (except the legacy default stream).
pub struct CudaStream {
    raw: sys::CUstream,
    driver: CudaDriver,
}

// SAFETY: stream handles are plain driver handles usable from any thread with the context
// bound (every use goes through `CudaDriver`, which binds it).
unsafe impl Send for CudaStream {}
// SAFETY: as above.
unsafe impl Sync for CudaStream {}

impl CudaStream {
    /// Whether this is the legacy default stream (`0`).
    pub fn is_default(&self) -> bool {
        self.raw.is_null()
    }
}

impl Drop for CudaStream {
    fn drop(&mut self) {
        if !self.raw.is_null() && self.driver.bind().is_ok() {
            // SAFETY: the stream was created by `create_stream` and is destroyed once.
            unsafe { sys::cuStreamDestroy_v2(self.raw) };
        }
    }
}

/// A CUDA event without timing; destroyed on drop.
pub struct CudaEvent {
    raw: sys::CUevent,
    driver: CudaDriver,
}

// SAFETY: see `CudaStream`.
unsafe impl Send for CudaEvent {}
// SAFETY: see `CudaStream`.
unsafe impl Sync for CudaEvent {}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        if self.driver.bind().is_ok() {
            // SAFETY: the event was created by `create_event` and is destroyed once.
            unsafe { sys::cuEventDestroy_v2(self.raw) };
        }
    }
}

impl CudaDriver {
    /// Open device `ordinal` (its primary context). Errors when there is no driver or no
    /// such device.
    pub fn open(ordinal: u32) -> Result<CudaDriver, CudaError> {
        let info = probe()?;
        if ordinal >= info.device_count {
            return Err(CudaError::plain(
                "open",
                format!(
                    "device {ordinal} does not exist ({} device(s))",
                    info.device_count
                ),
            ));
        }
        // SAFETY: `probe` succeeded, so the driver and its symbols are loaded and
        // initialised; out-pointers are to locals.
        unsafe {
            let mut device = 0;
            check("cuDeviceGet", sys::cuDeviceGet(&mut device, ordinal as i32))?;
            let mut buf = [0 as c_char; 256];
            check(
                "cuDeviceGetName",
                sys::cuDeviceGetName(buf.as_mut_ptr(), buf.len() as i32, device),
            )?;
            let name = CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
            let mut context = std::ptr::null_mut();
            check(
                "cuDevicePrimaryCtxRetain",
                sys::cuDevicePrimaryCtxRetain(&mut context, device),
            )?;
            Ok(CudaDriver {
                inner: Arc::new(Inner {
                    ordinal,
                    device,
                    context,
                    name,
                }),
            })
        }
    }

    /// Number of CUDA devices (`Err` without a driver).
    pub fn device_count() -> Result<u32, CudaError> {
        probe().map(|i| i.device_count)
    }

    pub fn ordinal(&self) -> u32 {
        self.inner.ordinal
    }

    /// The device's name (`NVIDIA H100 80GB HBM3`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Make this device's context current on the calling thread (cached per thread).
    pub fn bind(&self) -> Result<(), CudaError> {
        let ctx = self.inner.context;
        if BOUND_CONTEXT.with(|b| b.get()) == ctx as usize {
            return Ok(());
        }
        // SAFETY: the context is retained for the life of `inner`.
        check("cuCtxSetCurrent", unsafe { sys::cuCtxSetCurrent(ctx) })?;
        BOUND_CONTEXT.with(|b| b.set(ctx as usize));
        Ok(())
    }

    /// `(free, total)` bytes of device memory.
    pub fn mem_info(&self) -> Result<(u64, u64), CudaError> {
        self.bind()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: context bound; out-pointers to locals.
        check("cuMemGetInfo_v2", unsafe {
            sys::cuMemGetInfo_v2(&mut free, &mut total)
        })?;
        Ok((free as u64, total as u64))
    }

    /// The legacy default stream (`0`).
    pub fn default_stream(&self) -> CudaStream {
        CudaStream {
            raw: std::ptr::null_mut(),
            driver: self.clone(),
        }
    }

    /// A new non-blocking stream (no implicit synchronisation with the default stream).
    pub fn create_stream(&self) -> Result<CudaStream, CudaError> {
        self.bind()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: context bound; out-pointer to a local.
        check("cuStreamCreate", unsafe {
            sys::cuStreamCreate(&mut raw, sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32)
        })?;
        Ok(CudaStream {
            raw,
            driver: self.clone(),
        })
    }

    /// A new event without timing (the cheap kind, as RMM uses).
    pub fn create_event(&self) -> Result<CudaEvent, CudaError> {
        self.bind()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: context bound; out-pointer to a local.
        check("cuEventCreate", unsafe {
            sys::cuEventCreate(&mut raw, sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32)
        })?;
        Ok(CudaEvent {
            raw,
            driver: self.clone(),
        })
    }

    pub fn record_event(&self, event: &CudaEvent, stream: &CudaStream) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: both handles are live (owned by the borrowed wrappers).
        check("cuEventRecord", unsafe {
            sys::cuEventRecord(event.raw, stream.raw)
        })
    }

    /// Make `stream`'s later work wait for `event`.
    pub fn stream_wait_event(
        &self,
        stream: &CudaStream,
        event: &CudaEvent,
    ) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: both handles are live.
        check("cuStreamWaitEvent", unsafe {
            sys::cuStreamWaitEvent(stream.raw, event.raw, 0)
        })
    }

    pub fn synchronize_stream(&self, stream: &CudaStream) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the handle is live.
        check("cuStreamSynchronize", unsafe {
            sys::cuStreamSynchronize(stream.raw)
        })
    }

    /// Wait for all work of the context.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: context bound.
        check("cuCtxSynchronize", unsafe { sys::cuCtxSynchronize() })
    }

    /// `cuMemAlloc`: device memory, synchronous.
    pub fn malloc(&self, bytes: usize) -> Result<u64, CudaError> {
        self.bind()?;
        let mut ptr = 0;
        // SAFETY: context bound; out-pointer to a local.
        check("cuMemAlloc_v2", unsafe {
            sys::cuMemAlloc_v2(&mut ptr, bytes)
        })?;
        Ok(ptr)
    }

    /// `cuMemFree`.
    ///
    /// # Safety
    /// `ptr` came from [`CudaDriver::malloc`] of this device and is not used any more
    /// (by the host or by pending device work).
    pub unsafe fn free(&self, ptr: u64) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: forwarded from the caller's contract.
        check("cuMemFree_v2", unsafe { sys::cuMemFree_v2(ptr) })
    }

    /// Raise the release threshold of the device's default memory pool to `u64::MAX`, so
    /// that `cuMemFreeAsync` keeps memory for reuse instead of returning it at every
    /// synchronisation (what RMM's `cuda_async_memory_resource` does).
    pub fn raise_default_pool_release_threshold(&self) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: context bound; the pool handle is the device's own; the attribute value
        // is a u64 as RELEASE_THRESHOLD requires.
        unsafe {
            let mut pool = std::ptr::null_mut();
            check(
                "cuDeviceGetDefaultMemPool",
                sys::cuDeviceGetDefaultMemPool(&mut pool, self.inner.device),
            )?;
            let mut threshold: u64 = u64::MAX;
            check(
                "cuMemPoolSetAttribute",
                sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    &mut threshold as *mut u64 as *mut c_void,
                ),
            )
        }
    }

    /// The device's default memory pool (the one `cuMemAllocAsync` draws from).
    fn default_pool(&self) -> Result<sys::CUmemoryPool, CudaError> {
        self.bind()?;
        let mut pool = std::ptr::null_mut();
        // SAFETY: context bound; out-pointer to a local.
        check("cuDeviceGetDefaultMemPool", unsafe {
            sys::cuDeviceGetDefaultMemPool(&mut pool, self.inner.device)
        })?;
        Ok(pool)
    }

    /// Give the default memory pool's unused memory back to the device and restart its
    /// reserved and used high watermarks, so that the next reading covers what follows
    /// only. Call when no allocation of the pool is pending (after `synchronize`).
    pub fn reset_default_pool_watermarks(&self) -> Result<(), CudaError> {
        let pool = self.default_pool()?;
        // SAFETY: the pool is the device's own; the watermark attributes take a u64 that
        // must be 0 (a reset).
        unsafe {
            check("cuMemPoolTrimTo", sys::cuMemPoolTrimTo(pool, 0))?;
            for attr in [
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            ] {
                let mut zero: u64 = 0;
                check(
                    "cuMemPoolSetAttribute",
                    sys::cuMemPoolSetAttribute(pool, attr, &mut zero as *mut u64 as *mut c_void),
                )?;
            }
        }
        Ok(())
    }

    /// `(current, high watermark)` bytes the default memory pool reserves from the device.
    pub fn default_pool_reserved_bytes(&self) -> Result<(u64, u64), CudaError> {
        let pool = self.default_pool()?;
        let read = |attr| -> Result<u64, CudaError> {
            let mut value: u64 = 0;
            // SAFETY: the pool is the device's own; both attributes are u64 values.
            check("cuMemPoolGetAttribute", unsafe {
                sys::cuMemPoolGetAttribute(pool, attr, &mut value as *mut u64 as *mut c_void)
            })?;
            Ok(value)
        };
        Ok((
            read(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?,
            read(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?,
        ))
    }

    /// Total device memory in bytes.
    pub fn total_memory_bytes(&self) -> Result<u64, CudaError> {
        let mut bytes = 0usize;
        // SAFETY: the device handle is valid (from `open`); out-pointer to a local.
        check("cuDeviceTotalMem_v2", unsafe {
            sys::cuDeviceTotalMem_v2(&mut bytes, self.inner.device)
        })?;
        Ok(bytes as u64)
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> Result<(i32, i32), CudaError> {
        let read = |attr| -> Result<i32, CudaError> {
            let mut v = 0;
            // SAFETY: the device handle is valid; out-pointer to a local.
            check("cuDeviceGetAttribute", unsafe {
                sys::cuDeviceGetAttribute(&mut v, attr, self.inner.device)
            })?;
            Ok(v)
        };
        Ok((
            read(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            read(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        ))
    }

    /// `cuMemAllocAsync` on `stream` from the default memory pool.
    pub fn malloc_async(&self, bytes: usize, stream: &CudaStream) -> Result<u64, CudaError> {
        self.bind()?;
        let mut ptr = 0;
        // SAFETY: context bound; stream live; out-pointer to a local.
        check("cuMemAllocAsync", unsafe {
            sys::cuMemAllocAsync(&mut ptr, bytes, stream.raw)
        })?;
        Ok(ptr)
    }

    /// `cuMemFreeAsync` on `stream`.
    ///
    /// # Safety
    /// `ptr` came from `malloc_async` of this device; no work after this point on `stream`,
    /// nor on other streams not ordered after it, uses it.
    pub unsafe fn free_async(&self, ptr: u64, stream: &CudaStream) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: forwarded from the caller's contract.
        check("cuMemFreeAsync", unsafe {
            sys::cuMemFreeAsync(ptr, stream.raw)
        })
    }

    /// `cuMemHostAlloc` (portable): page-locked host memory.
    pub fn host_alloc_pinned(&self, bytes: usize) -> Result<*mut u8, CudaError> {
        self.bind()?;
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: context bound; out-pointer to a local.
        check("cuMemHostAlloc", unsafe {
            sys::cuMemHostAlloc(&mut ptr, bytes, sys::CU_MEMHOSTALLOC_PORTABLE)
        })?;
        Ok(ptr as *mut u8)
    }

    /// `cuMemFreeHost`.
    ///
    /// # Safety
    /// `ptr` came from [`CudaDriver::host_alloc_pinned`] and is not used any more.
    pub unsafe fn free_host(&self, ptr: *mut u8) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: forwarded from the caller's contract.
        check("cuMemFreeHost", unsafe {
            sys::cuMemFreeHost(ptr as *mut c_void)
        })
    }

    /// `cuMemAllocManaged` (global attach). Refuses more than `cuMemGetInfo` reports free:
    /// managed memory would oversubscribe and page instead of failing.
    pub fn malloc_managed(&self, bytes: usize) -> Result<u64, CudaError> {
        let (free, _) = self.mem_info()?;
        if bytes as u64 > free {
            return Err(CudaError {
                call: "cuMemAllocManaged",
                code: Some("CUDA_ERROR_OUT_OF_MEMORY".into()),
                message: format!("{bytes} bytes requested, {free} bytes of device memory free"),
            });
        }
        let mut ptr = 0;
        // SAFETY: context bound by `mem_info`; out-pointer to a local.
        check("cuMemAllocManaged", unsafe {
            sys::cuMemAllocManaged(
                &mut ptr,
                bytes,
                sys::CUmemAttach_flags::CU_MEM_ATTACH_GLOBAL as u32,
            )
        })?;
        Ok(ptr)
    }

    /// Copy host to device; synchronous with `stream = None`, else ordered on `stream`.
    ///
    /// # Safety
    /// `src` is readable for `bytes` bytes until the copy completes; `dst..dst + bytes` is
    /// device memory of this context.
    pub unsafe fn memcpy_htod(
        &self,
        dst: u64,
        src: *const u8,
        bytes: usize,
        stream: Option<&CudaStream>,
    ) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            match stream {
                None => check(
                    "cuMemcpyHtoD_v2",
                    sys::cuMemcpyHtoD_v2(dst, src as *const c_void, bytes),
                ),
                Some(s) => check(
                    "cuMemcpyHtoDAsync_v2",
                    sys::cuMemcpyHtoDAsync_v2(dst, src as *const c_void, bytes, s.raw),
                ),
            }
        }
    }

    /// Copy device to host; synchronous with `stream = None`, else ordered on `stream`.
    ///
    /// # Safety
    /// `dst` is writable for `bytes` bytes and not accessed until the copy completes;
    /// `src..src + bytes` is device memory of this context.
    pub unsafe fn memcpy_dtoh(
        &self,
        dst: *mut u8,
        src: u64,
        bytes: usize,
        stream: Option<&CudaStream>,
    ) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            match stream {
                None => check(
                    "cuMemcpyDtoH_v2",
                    sys::cuMemcpyDtoH_v2(dst as *mut c_void, src, bytes),
                ),
                Some(s) => check(
                    "cuMemcpyDtoHAsync_v2",
                    sys::cuMemcpyDtoHAsync_v2(dst as *mut c_void, src, bytes, s.raw),
                ),
            }
        }
    }

    /// Copy device to device; synchronous with `stream = None`, else ordered on `stream`.
    ///
    /// # Safety
    /// Both ranges are device memory of this context, `bytes` long.
    pub unsafe fn memcpy_dtod(
        &self,
        dst: u64,
        src: u64,
        bytes: usize,
        stream: Option<&CudaStream>,
    ) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            match stream {
                None => check("cuMemcpyDtoD_v2", sys::cuMemcpyDtoD_v2(dst, src, bytes)),
                Some(s) => check(
                    "cuMemcpyDtoDAsync_v2",
                    sys::cuMemcpyDtoDAsync_v2(dst, src, bytes, s.raw),
                ),
            }
        }
    }

    /// Set `bytes` bytes at `dst` to `value`; synchronous with `stream = None`.
    ///
    /// # Safety
    /// `dst..dst + bytes` is memory of this context that no one else uses meanwhile.
    pub unsafe fn memset_d8(
        &self,
        dst: u64,
        value: u8,
        bytes: usize,
        stream: Option<&CudaStream>,
    ) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            match stream {
                None => check("cuMemsetD8_v2", sys::cuMemsetD8_v2(dst, value, bytes)),
                Some(s) => check(
                    "cuMemsetD8Async",
                    sys::cuMemsetD8Async(dst, value, bytes, s.raw),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_never_panics_and_explains() {
        match probe() {
            Ok(info) => assert!(info.device_count > 0),
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("CUDA") || text.contains("cu"),
                    "unhelpful probe error: {text}"
                );
            }
        }
        // Cached: the second answer is the same.
        assert_eq!(probe().is_ok(), probe().is_ok());
    }
}
