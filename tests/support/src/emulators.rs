//! API emulators (filled in by the API work).
