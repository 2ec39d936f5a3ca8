"""Running the system: the embedded stack (``stack``), standalone processes
(``process``), logging and metrics, the reconciler, the submission client and the demo."""
