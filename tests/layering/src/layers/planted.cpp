// A planted violation: a torch-version test outside core/torch_compat.
#if TORCH_VERSION_MAJOR >= 2
#endif
