//! `Value<T>` and `Array<T>`: plain data in shared memory, behind a lock.

use super::error::{IpcError, Result};
use super::locks::{lock_word, try_lock_word, unlock_word};
use super::raw::Acquired;
use super::shm::{self, Kind, Segment, ShmState};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Types that can live in shared memory as raw bytes: plain old data.
///
/// A [`Value`] or [`Array`] copies its elements' bytes into memory that other
/// processes map, so an element type must mean the same thing in every
/// process and survive any bytes another process left there.
///
/// # Safety
///
/// Implement it only for types that
/// - are `Copy` and have no destructor (bytes are copied, never dropped);
/// - are valid for **every** bit pattern (no `bool`, `char`, enums or
///   references): a process killed half-way through a write, or a peer
///   running other code, can leave any bytes there;
/// - hold no pointers, references or handles (`Box`, `&T`, file
///   descriptors): an address means nothing in another process;
/// - for your own structs, are `#[repr(C)]` (or `transparent`) so every
///   process agrees on the layout, with fields that are themselves `Pod`.
///
/// troika implements it for the integer and floating-point types and for
/// arrays of `Pod` types. These rules are those of `bytemuck::Pod`, minus the
/// no-padding rule (padding bytes are copied but never read as data).
///
/// # Examples
///
/// ```
/// use troika::ipc::{Pod, Value};
///
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// #[repr(C)]
/// struct Point {
///     x: f64,
///     y: f64,
/// }
/// // SAFETY: repr(C), two `f64` fields (Pod), valid for every bit pattern,
/// // no pointers.
/// unsafe impl Pod for Point {}
///
/// let p = Value::new(Point { x: 1.0, y: 2.0 }).unwrap();
/// p.lock().x += 1.0;
/// assert_eq!(p.get(), Point { x: 2.0, y: 2.0 });
/// ```
pub unsafe trait Pod: Copy + Send + Sync + 'static {}

macro_rules! pod {
    ($($t:ty),*) => { $(
        // SAFETY: a primitive number: Copy, valid for all bits, no pointers.
        unsafe impl Pod for $t {}
    )* };
}
pod!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64
);
// SAFETY: an array of Pod is Pod: same layout rules, element-wise.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

#[repr(C)]
struct DataState {
    lock: AtomicU32,
    _pad: AtomicU32,
    len: AtomicU64,
}
// SAFETY: repr(C), atomics only, valid for any bits.
unsafe impl ShmState for DataState {}

/// Where the elements start in the payload.
const DATA_OFFSET: usize = 64;

fn new_segment<T: Pod>(kind: Kind, len: usize) -> Result<Segment> {
    if std::mem::align_of::<T>() > DATA_OFFSET {
        return Err(IpcError::InvalidHandle(
            "element alignment above 64 is not supported".into(),
        ));
    }
    let bytes = std::mem::size_of::<T>()
        .checked_mul(len)
        .and_then(|b| b.checked_add(DATA_OFFSET))
        .ok_or(IpcError::TooLarge {
            len: usize::MAX,
            capacity: isize::MAX as usize,
        })?;
    let seg = Segment::create(kind, shm::type_tag::<T>(), bytes)?;
    seg.state::<DataState>(0)
        .ok_or_else(|| IpcError::InvalidHandle("segment too small".into()))?
        .len
        .store(len as u64, Ordering::Release);
    Ok(seg)
}

/// The element count stored in a segment, validated against its size.
fn stored_len<T: Pod>(seg: &Segment) -> Result<usize> {
    let bad = || IpcError::InvalidHandle("shared data does not fit its segment".into());
    let st = seg.state::<DataState>(0).ok_or_else(bad)?;
    let len = usize::try_from(st.len.load(Ordering::Acquire)).map_err(|_| bad())?;
    let bytes = std::mem::size_of::<T>().checked_mul(len).ok_or_else(bad)?;
    seg.bytes(DATA_OFFSET, bytes).ok_or_else(bad)?;
    Ok(len)
}

/// The lock word and the element pointer for `len` elements, which
/// [`stored_len`] validated against the (immutable) mapping size.
fn layout<T: Pod>(seg: &Segment, len: usize) -> (&AtomicU32, NonNull<T>) {
    let bytes = std::mem::size_of::<T>().saturating_mul(len);
    match (seg.state::<DataState>(0), seg.bytes(DATA_OFFSET, bytes)) {
        (Some(st), Some(ptr)) => (&st.lock, ptr.cast::<T>()),
        // `len` was checked against this same mapping when the handle was
        // made; the mapping's size never changes.
        _ => unreachable!("shared data layout validated at open"),
    }
}

/// A guard over shared data: derefs to it while this process holds the lock.
pub struct SharedGuard<'a, D: ?Sized> {
    word: &'a AtomicU32,
    data: NonNull<D>,
    died: bool,
    _d: PhantomData<&'a mut D>,
}

impl<'a, D: ?Sized> SharedGuard<'a, D> {
    /// A guard over `parts` if the lock was `acquired` (`None`: it was not).
    fn new((word, data): (&'a AtomicU32, NonNull<D>), acquired: Option<Acquired>) -> Option<Self> {
        Some(SharedGuard {
            word,
            data,
            died: acquired? == Acquired::HolderDied,
            _d: PhantomData,
        })
    }

    /// Waits for the lock as long as it takes.
    fn lock(parts: (&'a AtomicU32, NonNull<D>)) -> Self {
        loop {
            if let Some(guard) = Self::lock_timeout(parts, None) {
                return guard;
            }
        }
    }

    /// Waits for the lock at most `timeout` (`None`: no limit); `None` if it
    /// stayed held.
    fn lock_timeout(parts: (&'a AtomicU32, NonNull<D>), timeout: Option<Duration>) -> Option<Self> {
        Self::new(parts, lock_word(parts.0, timeout))
    }

    /// The lock if it is free (or its holder is dead), without waiting.
    fn try_lock(parts: (&'a AtomicU32, NonNull<D>)) -> Option<Self> {
        Self::new(parts, try_lock_word(parts.0))
    }

    /// True if the previous holder died holding the lock: the data may be
    /// half-written.
    pub fn holder_died(&self) -> bool {
        self.died
    }
}

impl<D: ?Sized> std::fmt::Debug for SharedGuard<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedGuard")
            .field("holder_died", &self.died)
            .finish_non_exhaustive()
    }
}

impl<D: ?Sized> Deref for SharedGuard<'_, D> {
    type Target = D;
    fn deref(&self) -> &D {
        // SAFETY: `data` points into the mapping, which outlives 'a; the
        // process-shared lock is held, and every troika access to these bytes
        // takes it, so no one writes them meanwhile; D is Pod, valid for any
        // bits.
        unsafe { self.data.as_ref() }
    }
}

impl<D: ?Sized> DerefMut for SharedGuard<'_, D> {
    fn deref_mut(&mut self) -> &mut D {
        // SAFETY: as in `deref`; the lock makes this the only access, and
        // `&mut self` makes the reference unique within this process.
        unsafe { self.data.as_mut() }
    }
}

impl<D: ?Sized> Drop for SharedGuard<'_, D> {
    fn drop(&mut self) {
        unlock_word(self.word);
    }
}

/// A single `T` in shared memory with its own process-shared lock (Python's
/// `multiprocessing.Value`).
///
/// [`get`](Self::get) and [`set`](Self::set) each take the lock for one copy;
/// for a read-modify-write, hold [`lock`](Self::lock)'s guard. The lock
/// survives a holder's death like [`Lock`](super::Lock) does: the next guard
/// reports [`holder_died`](SharedGuard::holder_died). Clone it to share it
/// between threads; serialize it to hand it to another process.
///
/// # Examples
///
/// ```
/// use troika::ipc::Value;
///
/// let counter = Value::new(0u64).unwrap();
/// *counter.lock() += 5;
/// counter.set(counter.get() * 2);
/// assert_eq!(counter.get(), 10);
/// ```
pub struct Value<T: Pod> {
    seg: Segment,
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            seg: self.seg.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value").field("value", &self.get()).finish()
    }
}

impl<T: Pod> Value<T> {
    /// A shared value holding `init`.
    pub fn new(init: T) -> Result<Value<T>> {
        let v = Value {
            seg: new_segment::<T>(Kind::Value, 1)?,
            _t: PhantomData,
        };
        *v.lock() = init;
        Ok(v)
    }

    fn parts(&self) -> (&AtomicU32, NonNull<T>) {
        layout::<T>(&self.seg, 1)
    }

    /// Holds the lock and gives access to the value.
    pub fn lock(&self) -> SharedGuard<'_, T> {
        SharedGuard::lock(self.parts())
    }

    /// As [`lock`](Self::lock) if the lock is free (or its holder is dead),
    /// without waiting; `None` if it is held.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::Value;
    ///
    /// let shared = Value::new(0u64).unwrap();
    /// let held = shared.try_lock().unwrap();
    /// assert!(shared.try_lock().is_none());
    /// drop(held);
    /// assert!(shared.try_lock().is_some());
    /// ```
    pub fn try_lock(&self) -> Option<SharedGuard<'_, T>> {
        SharedGuard::try_lock(self.parts())
    }

    /// As [`lock`](Self::lock), waiting at most `timeout`; `None` if the
    /// lock stayed held (the shape of every `lock_timeout` in troika).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::ipc::Value;
    ///
    /// let shared = Value::new(0u64).unwrap();
    /// let held = shared.lock();
    /// assert!(shared.lock_timeout(Duration::from_millis(5)).is_none());
    /// drop(held);
    /// assert!(shared.lock_timeout(Duration::from_secs(1)).is_some());
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Option<SharedGuard<'_, T>> {
        SharedGuard::lock_timeout(self.parts(), Some(timeout))
    }

    /// A copy of the value.
    pub fn get(&self) -> T {
        *self.lock()
    }

    /// Replaces the value.
    pub fn set(&self, value: T) {
        *self.lock() = value;
    }
}

/// A fixed-length array of `T` in shared memory with one process-shared lock
/// (Python's `multiprocessing.Array`).
///
/// # Examples
///
/// ```
/// use troika::ipc::Array;
///
/// let a = Array::<f64>::from_slice(&[1.0, 2.0, 3.0]).unwrap();
/// a.set(1, 20.0).unwrap();
/// a.lock().iter_mut().for_each(|x| *x *= 2.0);
/// assert_eq!(a.to_vec(), vec![2.0, 40.0, 6.0]);
/// assert!(a.get(3).is_err());
/// ```
pub struct Array<T: Pod> {
    seg: Segment,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            seg: self.seg.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array").field("len", &self.len()).finish()
    }
}

impl<T: Pod> Array<T> {
    /// An array of `len` elements, each `fill`.
    pub fn new(len: usize, fill: T) -> Result<Array<T>> {
        let a = Array {
            seg: new_segment::<T>(Kind::Array, len)?,
            len,
            _t: PhantomData,
        };
        a.lock().fill(fill);
        Ok(a)
    }

    /// An array holding a copy of `items`.
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        let a = Array {
            seg: new_segment::<T>(Kind::Array, items.len())?,
            len: items.len(),
            _t: PhantomData,
        };
        a.lock().copy_from_slice(items);
        Ok(a)
    }

    fn parts(&self) -> (&AtomicU32, NonNull<[T]>) {
        let (w, p) = layout::<T>(&self.seg, self.len);
        (w, NonNull::slice_from_raw_parts(p, self.len))
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Holds the lock and gives access to the elements as a slice.
    pub fn lock(&self) -> SharedGuard<'_, [T]> {
        SharedGuard::lock(self.parts())
    }

    /// As [`lock`](Self::lock) if the lock is free (or its holder is dead),
    /// without waiting; `None` if it is held.
    ///
    /// # Examples
    ///
    /// ```
    /// use troika::ipc::Array;
    ///
    /// let shared = Array::new(4, 0i32).unwrap();
    /// let held = shared.try_lock().unwrap();
    /// assert!(shared.try_lock().is_none());
    /// drop(held);
    /// assert!(shared.try_lock().is_some());
    /// ```
    pub fn try_lock(&self) -> Option<SharedGuard<'_, [T]>> {
        SharedGuard::try_lock(self.parts())
    }

    /// As [`lock`](Self::lock), waiting at most `timeout`; `None` if the
    /// lock stayed held (the shape of every `lock_timeout` in troika).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use troika::ipc::Array;
    ///
    /// let shared = Array::new(4, 0i32).unwrap();
    /// let held = shared.lock();
    /// assert!(shared.lock_timeout(Duration::from_millis(5)).is_none());
    /// drop(held);
    /// assert!(shared.lock_timeout(Duration::from_secs(1)).is_some());
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Option<SharedGuard<'_, [T]>> {
        SharedGuard::lock_timeout(self.parts(), Some(timeout))
    }

    /// A copy of element `i`.
    pub fn get(&self, i: usize) -> Result<T> {
        let g = self.lock();
        g.get(i).copied().ok_or(IpcError::IndexOutOfRange {
            index: i,
            len: g.len(),
        })
    }

    /// Replaces element `i`.
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        let mut g = self.lock();
        let len = g.len();
        match g.get_mut(i) {
            Some(slot) => {
                *slot = value;
                Ok(())
            }
            None => Err(IpcError::IndexOutOfRange { index: i, len }),
        }
    }

    /// A copy of every element.
    pub fn to_vec(&self) -> Vec<T> {
        self.lock().to_vec()
    }
}

impl<T: Pod> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        shm::serialize_segment(&self.seg, s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let seg = shm::deserialize_segment(d, Kind::Value, shm::type_tag::<T>())?;
        if stored_len::<T>(&seg).map_err(serde::de::Error::custom)? != 1 {
            return Err(serde::de::Error::custom("shared value has a wrong length"));
        }
        Ok(Value {
            seg,
            _t: PhantomData,
        })
    }
}

impl<T: Pod> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        shm::serialize_segment(&self.seg, s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let seg = shm::deserialize_segment(d, Kind::Array, shm::type_tag::<T>())?;
        let len = stored_len::<T>(&seg).map_err(serde::de::Error::custom)?;
        Ok(Array {
            seg,
            len,
            _t: PhantomData,
        })
    }
}
