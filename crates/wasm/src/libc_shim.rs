//! The C allocation functions the pure-Rust `openjp2` port (JPEG 2000 and HTJ2K decoding,
//! a c2rust translation of OpenJPEG) still imports on wasm32: `malloc`, `calloc`,
//! `realloc`, `free` and `strcpy`. Natively libc provides them; in the browser nothing
//! does, and the instance would not even link (imports from `env`). Here they are
//! implemented on Rust's global allocator.
//!
//! The port also calls Rust's `dealloc` on a null pointer when it frees a code block that
//! never got decoded data (`opj_tcd_code_block_dec_deallocate`): natively the system
//! allocator's `free(NULL)` ignores it, in wasm dlmalloc reads a header below address 0
//! ("memory access out of bounds"). So the browser build's global allocator ignores a null
//! dealloc ([`NullTolerant`]).
//!
//! Each block carries a 16-byte header with its size (C's `free` does not pass one; Rust's
//! `dealloc` needs it), keeping the 16-byte alignment C's `malloc` guarantees. `free` of a
//! null pointer is a no-op, as in C (the decoder does call it).

use std::alloc::{GlobalAlloc, Layout, System, alloc, alloc_zeroed, dealloc, realloc as grow};
use std::ptr::null_mut;

/// The system allocator (dlmalloc in wasm), except that deallocating null does nothing.
pub struct NullTolerant;

// SAFETY: forwards to `System`, whose contract it keeps; a null `dealloc` is skipped.
unsafe impl GlobalAlloc for NullTolerant {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !ptr.is_null() {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: NullTolerant = NullTolerant;

const HEADER: usize = 16;

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(HEADER)?, HEADER).ok()
}

unsafe fn allocate(size: usize, zeroed: bool) -> *mut u8 {
    let Some(l) = layout(size) else {
        return null_mut();
    };
    // SAFETY: `l` has a non-zero size (at least the header).
    let base = unsafe { if zeroed { alloc_zeroed(l) } else { alloc(l) } };
    if base.is_null() {
        return base;
    }
    // SAFETY: `base` is valid for `HEADER + size` bytes and aligned to 16.
    unsafe {
        (base as *mut usize).write(size);
        base.add(HEADER)
    }
}

/// C `malloc`.
///
/// # Safety
/// As C's: the result is freed with [`free`] only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut u8 {
    unsafe { allocate(size, false) }
}

/// C `calloc` (zeroed; null on overflow).
///
/// # Safety
/// As C's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut u8 {
    match count.checked_mul(size) {
        Some(total) => unsafe { allocate(total, true) },
        None => null_mut(),
    }
}

/// C `free`; a null pointer is ignored.
///
/// # Safety
/// `ptr` is null or came from [`malloc`], [`calloc`] or [`realloc`] and was not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut u8) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: per the contract the header precedes `ptr` and holds the size.
    unsafe {
        let base = ptr.sub(HEADER);
        let size = (base as *const usize).read();
        if let Some(l) = layout(size) {
            dealloc(base, l);
        }
    }
}

/// C `realloc` (null `ptr`: malloc; size 0: free and null).
///
/// # Safety
/// As [`free`] for `ptr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
    if ptr.is_null() {
        return unsafe { malloc(size) };
    }
    if size == 0 {
        unsafe { free(ptr) };
        return null_mut();
    }
    // SAFETY: per the contract the header precedes `ptr`.
    unsafe {
        let base = ptr.sub(HEADER);
        let old = (base as *const usize).read();
        let (Some(old_layout), Some(new_layout)) = (layout(old), layout(size)) else {
            return null_mut();
        };
        let moved = grow(base, old_layout, new_layout.size());
        if moved.is_null() {
            return moved;
        }
        (moved as *mut usize).write(size);
        moved.add(HEADER)
    }
}

/// C `strcpy`.
///
/// # Safety
/// `src` is NUL-terminated and `dst` has room for it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strcpy(dst: *mut u8, src: *const u8) -> *mut u8 {
    let mut i = 0;
    loop {
        // SAFETY: per the contract, up to and including the NUL.
        unsafe {
            let c = *src.add(i);
            *dst.add(i) = c;
            if c == 0 {
                return dst;
            }
        }
        i += 1;
    }
}
