// Planted violations: a torch-version test outside core/torch_compat, and a call of
// std::filesystem::remove_all.
#if TORCH_VERSION_MAJOR >= 2
#endif
void planted() { std::filesystem::remove_all("x"); }
