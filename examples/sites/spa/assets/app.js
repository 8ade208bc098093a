document.getElementById("app").dataset.route = location.pathname;
