"""k-diffusion at the commit A1111 pins (K_DIFFUSION_COMMIT_HASH ab527a9a); Forge `previous` ships the same
`k_diffusion.external` / `k_diffusion.sampling` code. Only what the doubles use."""
