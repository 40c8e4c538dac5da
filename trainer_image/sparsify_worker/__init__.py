"""The stage worker: `sparsify-worker validate|train|export|benchmark|publish`.

Heavy imports (torch, sparseml, deepsparse) happen inside the stage modules, so the CLI and
the pure helpers load fast and the operator never needs them."""
