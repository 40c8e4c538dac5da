"""The SparsifyJob operator (Kopf). Pure builders and the reconcile decision live apart from
the handlers and API calls; the operator never imports the ML stack."""
