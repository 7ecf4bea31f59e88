#include <loftq/loftq.hpp>
