from litho import lifecycle
from services.renderer._app import main

lifecycle.run(main)
