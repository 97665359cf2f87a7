//! The only module that names glommio.
