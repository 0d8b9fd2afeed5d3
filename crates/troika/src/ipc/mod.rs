//! Cross-process communication and synchronisation.
