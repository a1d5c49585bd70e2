//! Store tests: the facts-model table row by row, ordering, prefix LIST,
//! durability, and a property test.
