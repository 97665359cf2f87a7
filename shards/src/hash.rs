//! PostgreSQL's extended hash functions, seeded as hash partitioning seeds them.
