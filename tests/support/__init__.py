"""What tests, benchmarks and the demo share: SparsifyJob/Job/Pod builders, the operator run as
a process, and the API's names (from sparsify_operator.api, never re-declared)."""
