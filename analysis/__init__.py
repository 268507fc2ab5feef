"""The theory check: measures the claims of the Reptile paper's section 5 on any LossFn."""
