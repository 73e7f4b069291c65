from litho import lifecycle
from services.template._app import main

lifecycle.run(main)
