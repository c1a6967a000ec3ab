//! Integration tests of the executor crate: the invocation hot path, in one process, with a
//! counting global allocator (so this binary holds only tests that may share it).

mod alloc;
