"""Scripts and the test bed around cs2os (not part of the installed
package): a regular package so that ``tools.testbed`` imports the same way
from the tests, the sandbox and the benchmarks."""
