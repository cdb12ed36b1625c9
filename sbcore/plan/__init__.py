"""The pure planners: a topology -> what a host holds, admission, placement, the changes an `up`
makes. No I/O."""
