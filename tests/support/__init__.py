"""What the tests share: fixtures that start real backends, harnesses, fault
injectors and the contract suites every backend of a port passes."""
